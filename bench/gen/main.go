// Command gen writes the benchmark's source images, deterministically:
//
//	gen halfrandom FILE SIZE    1 MiB of random data, then 1 MiB of zeroes written as data, …
//	gen text FILE SIZE          compressible text (log lines of a small vocabulary)
//	gen sparse FILE SIZE DATA   a sparse file of SIZE with DATA bytes of random data in 1 MiB runs spread evenly
//
// Sizes are bytes with an optional k, M or G suffix (powers of 1024).
package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
)

const run = 1 << 20

func main() {
	if err := gen(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

func gen(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("usage: gen halfrandom|text|sparse FILE SIZE [DATA]")
	}
	size, err := parseSize(args[2])
	if err != nil {
		return err
	}
	f, err := os.Create(args[1])
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(b []byte) {
		for i := 0; i+8 <= len(b); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				b[i+k] = byte(v >> (8 * k))
			}
		}
	}
	buf := make([]byte, run)
	switch args[0] {
	case "halfrandom":
		w := bufio.NewWriterSize(f, 4<<20)
		for off := int64(0); off < size; off += run {
			n := min(run, size-off)
			if (off/run)%2 == 0 {
				random(buf)
			} else {
				clear(buf)
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
	case "text":
		words := strings.Fields("the of and to in is was for on that with as by at from block image cluster " +
			"qemu disk write read guest host error warning info debug offset length sector zero data table " +
			"refcount header backing chain snapshot bitmap compress convert commit rebase check map size")
		w := bufio.NewWriterSize(f, 4<<20)
		var written int64
		line := 0
		for written < size {
			var b strings.Builder
			fmt.Fprintf(&b, "2026-11-25T12:%02d:%02d.%06d host%d qimg[%d]:", line/3600%60, line/60%60, line%1000000, line%7, 1000+line%50)
			for k := 0; k < 8+rng.IntN(8); k++ {
				b.WriteByte(' ')
				b.WriteString(words[rng.IntN(len(words))])
			}
			fmt.Fprintf(&b, " %d\n", rng.IntN(100000))
			s := b.String()
			if int64(len(s)) > size-written {
				s = s[:size-written]
			}
			n, err := w.WriteString(s)
			if err != nil {
				return err
			}
			written += int64(n)
			line++
		}
		if err := w.Flush(); err != nil {
			return err
		}
	case "sparse":
		if len(args) < 4 {
			return fmt.Errorf("sparse needs DATA")
		}
		data, err := parseSize(args[3])
		if err != nil {
			return err
		}
		if err := f.Truncate(size); err != nil {
			return err
		}
		runs := max(data/run, 1)
		step := size / runs / run * run
		for i := int64(0); i < runs; i++ {
			random(buf)
			if _, err := f.WriteAt(buf, i*step); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown kind %q", args[0])
	}
	return nil
}
