package cmd

//go:generate go run .. gen-man ../man

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func init() { register(newGenManCmd) }

// newGenManCmd is the hidden "gen-man DIR" command that writes the man
// pages (qimg.1 and one page per subcommand) from the command tree; "go
// generate ./cmd" runs it into man/.
func newGenManCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "write the man pages into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			pages, err := ManPages()
			if err != nil {
				return err
			}
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			old, _ := filepath.Glob(filepath.Join(dir, "qimg*.1"))
			for _, p := range old {
				if _, ok := pages[filepath.Base(p)]; !ok {
					if err := os.Remove(p); err != nil {
						return err
					}
				}
			}
			for name, text := range pages {
				if err := os.WriteFile(filepath.Join(dir, name), text, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// thDate is the date field of a page's .TH line, left empty so that
// the pages only change when the commands do.
var thDate = regexp.MustCompile(`(?m)^(\.TH "[^"]*" "[^"]*") "[^"]*"`)

// ManPages renders the man pages of the command tree, by file name.
func ManPages() (map[string][]byte, error) {
	root := NewRootCmd(io.Discard, io.Discard)
	pages := map[string][]byte{}
	var walk func(c *cobra.Command) error
	walk = func(c *cobra.Command) error {
		c.DisableAutoGenTag = true
		var b bytes.Buffer
		header := &doc.GenManHeader{Section: "1", Source: "qimg", Manual: "qimg manual"}
		if err := doc.GenMan(c, header, &b); err != nil {
			return fmt.Errorf("man page of %s: %w", c.CommandPath(), err)
		}
		name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".1"
		pages[name] = thDate.ReplaceAll(b.Bytes(), []byte(`$1 ""`))
		subs := c.Commands()
		sort.Slice(subs, func(i, j int) bool { return subs[i].Name() < subs[j].Name() })
		for _, s := range subs {
			if !s.IsAvailableCommand() || s.IsAdditionalHelpTopicCommand() {
				continue
			}
			if err := walk(s); err != nil {
				return err
			}
		}
		return nil
	}
	return pages, walk(root)
}
