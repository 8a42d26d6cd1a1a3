package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/hubservice"
)

// labMethod invokes a direct method on a module of the running lab
// through the hub's service API and prints the module's answer.
func labMethod(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab method", flag.ContinueOnError)
	t := &labTarget{}
	t.register(fs)
	dir, device, hub := &t.dir, &t.device, &t.hub
	timeout := fs.Duration("timeout", 30*time.Second, "how long the hub waits for the module's answer (responseTimeoutInSeconds, 5s..300s)")
	connect := fs.Duration("connect-timeout", 0, "how long the hub waits for the module to connect (connectTimeoutInSeconds, 0..300s)")
	asJSON := fs.Bool("json", false, "print the answer as JSON {status, payload}")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab method [flags] MODULE NAME [PAYLOAD]\n\nInvoke direct method NAME on MODULE of the running lab (MODULE \"\" for the device) and print its\nanswer. PAYLOAD is JSON; anything else is sent as a JSON string. Exit status 1 when the module\nis not connected (IoT Hub's 404 DeviceNotOnline) or answers a status of 400 or more.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.ParseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() < 2 || fs.NArg() > 3 {
		return cli.Usagef("lab method: want MODULE NAME [PAYLOAD]")
	}
	// IoT Hub's bounds (iot-hub-devguide-direct-methods, "Method invocation").
	if *timeout < 5*time.Second || *timeout > 300*time.Second {
		return cli.Usagef("lab method: --timeout %v: want 5s..300s", *timeout)
	}
	if *connect < 0 || *connect > 300*time.Second {
		return cli.Usagef("lab method: --connect-timeout %v: want 0..300s", *connect)
	}
	module, name := fs.Arg(0), fs.Arg(1)
	if name == "" {
		return cli.Usagef("lab method: empty method NAME")
	}
	var payload json.RawMessage
	if fs.NArg() == 3 {
		payload = jsonOrString(fs.Arg(2))
	}
	dev, err := labDevice(*dir, *hub, *device, "lab method")
	if err != nil {
		return err
	}
	c, err := lab.ServiceClient(*dir)
	if err != nil {
		return err
	}
	r, err := c.InvokeMethod(ctx, dev, module, name, payload, *timeout, *connect)
	var se *hubservice.ServiceError
	if errors.As(err, &se) && se.HTTPStatus == 404 && (se.Code == "DeviceNotOnline" || se.Number == 404103) {
		return fmt.Errorf("%s is not connected to the lab hub (or does not handle methods): %w", hubservice.Identity(dev, module), err)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(r); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "status %d\n%s\n", r.Status, indentJSON(r.Payload))
	}
	if r.Status >= 400 {
		return fmt.Errorf("%s answered method %q with status %d", hubservice.Identity(dev, module), name, r.Status)
	}
	return nil
}

// jsonOrString is s when it is JSON, else s as a JSON string.
func jsonOrString(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

func indentJSON(b json.RawMessage) string {
	if len(b) == 0 {
		return "null"
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "    "); err != nil {
		return string(b)
	}
	return out.String()
}

// labLogs prints the log of a module the lab runs (logs/MODULE.log in
// the state folder) and, with --follow, what it writes next.
func labLogs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab logs", flag.ContinueOnError)
	dir := fs.String("state-dir", "./lab-state", "the lab's state `folder`")
	follow := fs.Bool("follow", false, "keep printing what the module writes until interrupted")
	tail := fs.Int("tail", 0, "print only the last `N` lines first (0: all)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab logs [flags] MODULE\n\nPrint the log of a module the lab runs (lab up writes it to logs/MODULE.log in the state folder).\n\n")
		fs.PrintDefaults()
	}
	if err := cli.ParseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usagef("lab logs: want MODULE")
	}
	module := fs.Arg(0)
	if module == "" || strings.ContainsAny(module, `/\`) || module == "." || module == ".." {
		return cli.Usagef("lab logs: %q is not a module ID", module)
	}
	if *tail < 0 {
		return cli.Usagef("lab logs: --tail %d: want 0 or more", *tail)
	}
	path := filepath.Join(*dir, "logs", module+".log")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no log of module %q in %s (logs there: %s)", module, filepath.Join(*dir, "logs"), strings.Join(labLogNames(*dir), ", "))
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := printTail(f, stdout, *tail); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if !*follow {
		return nil
	}
	return followFile(ctx, f, stdout)
}

// labLogNames lists the modules with a log in the state folder.
func labLogNames(dir string) []string {
	var names []string
	entries, _ := os.ReadDir(filepath.Join(dir, "logs"))
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".log"); ok && n != "lab" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return []string{"none"}
	}
	return names
}

// printTail copies r to w, only its last n lines when n > 0.
func printTail(r io.Reader, w io.Writer, n int) error {
	if n <= 0 {
		_, err := io.Copy(w, r)
		return err
	}
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	return sc.Err()
}

// followPoll is how often a followed log or message feed is read again.
const followPoll = 200 * time.Millisecond

// followFile copies what is appended to f to w until ctx ends; a file
// truncated (the lab restarted the module with a new log) is read again
// from its start.
func followFile(ctx context.Context, f *os.File, w io.Writer) error {
	for {
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followPoll):
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		if st, err := f.Stat(); err == nil && st.Size() < off {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
		}
	}
}
