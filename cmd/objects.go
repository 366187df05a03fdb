package cmd

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"qimg/image"
)

// objectFlag declares --object, which every command that opens or creates
// images takes, as qemu-img does.
func objectFlag(f *pflag.FlagSet) {
	f.StringArray("object", nil, "define an object: secret,id=ID,data=DATA|file=FILE[,format=raw|base64][,keyid=ID,iv=IV] (or tls-creds-*, throttle-group; \"help\" lists the types)")
}

// withObjects makes a command parse its --object definitions before it
// runs and hand them to every image it opens or creates; the secrets are
// wiped when it returns. A command that parses its own flags (resize)
// calls useObjects itself.
func withObjects(c *cobra.Command) {
	if c.Flags().Lookup("object") == nil || c.RunE == nil || c.DisableFlagParsing {
		return
	}
	run := c.RunE
	c.RunE = func(c *cobra.Command, args []string) error {
		if err := useObjects(c); err != nil {
			return err
		}
		defer image.UseObjects(nil)
		return run(c, args)
	}
}

// useObjects parses the --object values of c, in order (a secret may be
// encrypted with one defined before it). "--object help" and
// "--object TYPE,help" print qemu-img's lists and end the command.
func useObjects(c *cobra.Command) error {
	flag := c.Flags().Lookup("object")
	if flag == nil {
		return nil
	}
	// the slice itself: GetStringArray loses a lone empty definition
	defs := flag.Value.(pflag.SliceValue).GetSlice()
	if len(defs) == 0 {
		return nil
	}
	objs := &image.Objects{}
	for _, def := range defs {
		if text, ok := image.ObjectHelp(def); ok {
			fmt.Fprint(c.OutOrStdout(), text)
			return &exitError{code: 0}
		}
		if err := objs.ParseObject(def); err != nil {
			objs.Wipe()
			return err
		}
	}
	image.UseObjects(objs)
	return nil
}
