package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// startBroker starts the plant's MQTT broker on loopback, as Config.Broker
// says: Mosquitto, as on most gateways, or an embedded mochi-mqtt broker.
// It returns the broker's URL.
func (l *Lab) startBroker(ctx context.Context) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	bin, lookErr := exec.LookPath("mosquitto")
	switch l.cfg.Broker {
	case "", "mosquitto", "embedded":
	default:
		return "", fmt.Errorf("broker %q: want mosquitto or embedded", l.cfg.Broker)
	}
	if l.cfg.Broker == "mosquitto" && lookErr != nil {
		return "", fmt.Errorf("broker: %w", lookErr)
	}
	if l.cfg.Broker != "embedded" && lookErr == nil {
		if err := l.startMosquitto(ctx, bin, addr); err != nil {
			return "", fmt.Errorf("broker: %w", err)
		}
		l.printf("broker", "Mosquitto (%s) at mqtt://%s", bin, addr)
		return "mqtt://" + addr, nil
	}
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return "", err
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "lab", Address: addr})); err != nil {
		return "", fmt.Errorf("broker: %w", err)
	}
	if err := srv.Serve(); err != nil {
		return "", fmt.Errorf("broker: %w", err)
	}
	l.onClose(srv.Close)
	l.printf("broker", "embedded MQTT broker (mochi-mqtt) at mqtt://%s", addr)
	return "mqtt://" + addr, nil
}

// startMosquitto runs Mosquitto on addr until the lab closes.
func (l *Lab) startMosquitto(ctx context.Context, bin, addr string) error {
	host, port, _ := net.SplitHostPort(addr)
	conf := []string{"listener " + port + " " + host, "allow_anonymous true", "persistence false", "log_dest stderr"}
	if os.Geteuid() == 0 {
		// Not the mosquitto user it would switch to: the files are root's.
		conf = append(conf, "user root")
	}
	path := l.path("mosquitto.conf")
	if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return l.startDaemon(ctx, "mosquitto", addr, bin, "-c", path)
}

// startDaemon runs bin with args until the lab closes, its output in
// logs/NAME.log, and waits until it listens on addr.
func (l *Lab) startDaemon(ctx context.Context, name, addr, bin string, args ...string) error {
	logPath := l.path("logs", name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); out.Close() }()
	l.onClose(func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
			<-exited
		}
		return nil
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("%s exited (%v); see %s", name, err, logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not listen on %s; see %s", name, addr, logPath)
		}
	}
}
