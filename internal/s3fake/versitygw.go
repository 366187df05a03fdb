package s3fake

import (
	"bytes"
	"fmt"
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// FindVersitygw is the versitygw program on PATH, else where go install
// puts programs; "" when there is none.
func FindVersitygw() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	dir := os.Getenv("GOBIN")
	if dir == "" {
		dir = filepath.Join(build.Default.GOPATH, "bin")
	}
	p := filepath.Join(dir, "versitygw")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// Versitygw is a running versitygw: a real S3 gateway whose posix
// backend keeps buckets as the folders of a directory and objects as
// plain files, as Dir does.
type Versitygw struct {
	Addr   string // host:port on loopback
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartVersitygw runs the program on root with one account's keys on a
// free loopback port, and returns once it answers (within 30 s).
func StartVersitygw(program, root, keyID, secret string) (*Versitygw, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(program, "--port", addr, "--quiet", "posix", root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+keyID, "ROOT_SECRET_KEY="+secret)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	v := &Versitygw{Addr: addr, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(v.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-v.exited:
			return nil, fmt.Errorf("versitygw ended before it served: %s", out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return v, nil
		}
		if time.Now().After(deadline) {
			v.Stop()
			return nil, fmt.Errorf("versitygw does not answer on %s within 30s: %s", addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the gateway and waits until it is gone.
func (v *Versitygw) Stop() {
	v.cmd.Process.Kill()
	<-v.exited
}

// freeLoopbackAddr is a loopback port free a moment ago, for a server
// that cannot be handed a listener.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
