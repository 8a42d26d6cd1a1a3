package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/edgetpm/edgetpm/internal/daemon"
)

// startBroker starts the plant's MQTT broker on loopback, as Config.Broker
// says: Mosquitto, as on most gateways, or an embedded mochi-mqtt broker.
// It returns the broker's URL.
func (l *Lab) startBroker(ctx context.Context) (string, error) {
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
		addr, err := l.startMosquitto(ctx, bin)
		if err != nil {
			return "", fmt.Errorf("broker: %w", err)
		}
		l.printf("broker", "Mosquitto (%s) at mqtt://%s", bin, addr)
		return "mqtt://" + addr, nil
	}
	addr, err := freeAddr()
	if err != nil {
		return "", err
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

// startMosquitto runs Mosquitto on a free loopback port until the lab
// closes, and returns its address.
func (l *Lab) startMosquitto(ctx context.Context, bin string) (string, error) {
	var addr string
	err := l.startDaemon(ctx, "mosquitto", func(int) (daemon.Spec, error) {
		port, err := daemon.FreePorts(1)
		if err != nil {
			return daemon.Spec{}, err
		}
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := []string{"listener " + strconv.Itoa(port) + " 127.0.0.1", "allow_anonymous true", "persistence false", "log_dest stderr"}
		if os.Geteuid() == 0 {
			// Not the mosquitto user it would switch to: the files are root's.
			conf = append(conf, "user root")
		}
		path := l.path("mosquitto.conf")
		if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
			return daemon.Spec{}, err
		}
		return daemon.Spec{Path: bin, Args: []string{"-c", path}, Ready: daemon.Listening(addr)}, nil
	})
	return addr, err
}

// startDaemon runs the daemon that spec makes until the lab closes, its
// output in logs/NAME.log. spec picks a port for each attempt: one free
// when picked may be taken before the daemon binds it.
func (l *Lab) startDaemon(ctx context.Context, name string, spec func(attempt int) (daemon.Spec, error)) error {
	logPath := l.path("logs", name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close() // the daemon has its own
	p, err := daemon.StartRetry(ctx, 3, func(attempt int) (daemon.Spec, error) {
		s, err := spec(attempt)
		s.Name, s.Output = name, out
		return s, err
	})
	if err != nil {
		return fmt.Errorf("%w; see %s", err, logPath)
	}
	l.onClose(func() error { return p.Stop(stopTimeout) })
	return nil
}
