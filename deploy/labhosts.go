package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
)

// labHosts prints the hosts file lines that resolve the host names of the
// lab's connection strings to the loopback addresses the lab serves them
// at, or writes them into the hosts file in place of the lab's earlier
// lines (or takes those out).
func labHosts(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab hosts", flag.ContinueOnError)
	dir := fs.String("state-dir", "./lab-state", "the lab's state `folder`, whose connection strings name the hosts")
	write := fs.Bool("write", false, "write the lines into the hosts file, in place of the lab's earlier ones (needs root)")
	remove := fs.Bool("remove", false, "take the lab's lines out of the hosts file (needs root)")
	file := fs.String("file", lab.HostsFile, "the hosts `file` --write and --remove change")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab hosts [--write|--remove] [flags]\n\nPrint, or write into /etc/hosts, the lines that resolve the lab's host names\nto the loopback addresses where the lab serves them on port 443.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if *write && *remove {
		return cli.Usagef("lab hosts: --write or --remove, not both")
	}
	var block string // empty takes the lab's lines out
	if !*remove {
		names, err := lab.Names(*dir)
		if err != nil {
			return fmt.Errorf("lab hosts: %w", err)
		}
		if block, err = lab.HostsLines(names); err != nil {
			return fmt.Errorf("lab hosts: %w", err)
		}
	}
	if !*write && !*remove {
		fmt.Fprint(stdout, block)
		return nil
	}
	changed, err := lab.UpdateHosts(*file, block)
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (run as root)", err)
	}
	if err != nil {
		return err
	}
	switch {
	case !changed:
		fmt.Fprintf(stdout, "%s already as asked\n", *file)
	case *remove:
		fmt.Fprintf(stdout, "took the lab's lines out of %s\n", *file)
	default:
		fmt.Fprintf(stdout, "wrote the lab's lines into %s\n", *file)
	}
	return nil
}
