package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/hubservice"
)

// followWait is how long one request of lab messages --follow waits on
// the hub for a message.
const followWait = 20 * time.Second

// labMessages prints the device-to-cloud messages that reached the lab
// hub's $upstream, as `az iot hub monitor-events --properties all` shows
// IoT Hub's.
func labMessages(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab messages", flag.ContinueOnError)
	dir := fs.String("state-dir", "./lab-state", "the lab's state `folder` (the running lab hub's)")
	follow := fs.Bool("follow", false, "keep printing messages as they arrive until interrupted")
	asJSON := fs.Bool("json", false, "print one compact JSON object a line")
	device := fs.String("device", "", "only the messages of this device `ID`")
	module := fs.String("module", "", "only the messages of this module `ID`")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab messages [flags]\n\nPrint the device-to-cloud messages that reached the running lab hub, with their system and\napplication properties, as 'az iot hub monitor-events --properties all' prints IoT Hub's.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.ParseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return cli.Usagef("lab messages: unexpected %q", fs.Arg(0))
	}
	c, err := lab.ServiceClient(*dir)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	if !*asJSON {
		enc.SetIndent("", "    ")
	}
	next := 0
	for {
		var wait time.Duration
		if *follow {
			wait = followWait
		}
		// The hub answers from another index when it no longer keeps
		// the messages from next, or restarted and has fewer.
		msgs, at, err := c.Upstream(ctx, next, wait)
		if err != nil {
			if *follow && ctx.Err() != nil {
				return nil // interrupted
			}
			return err
		}
		next = at
		for i, m := range msgs {
			ev := monitorEvent(m, next+i)
			if (*device != "" && ev.Event.Origin != *device) || (*module != "" && ev.Event.Module != *module) {
				continue
			}
			if err := enc.Encode(ev); err != nil {
				return err
			}
		}
		next += len(msgs)
		if !*follow {
			return nil
		}
	}
}

// monitorEvent is one message as az iot hub monitor-events prints it
// with --properties all: {"event":{"origin","module","interface",
// "component","properties":{"system","application"},"annotations",
// "payload"}}; system properties carry their AMQP names (message_id,
// correlation_id, content_type, content_encoding), annotations the
// iothub-* and x-opt-* message annotations of IoT Hub's Event
// Hubs-compatible endpoint, and the payload is JSON when the content type
// is application/json and the body parses, else text (Azure
// azure-iot-cli-extension azext_iot/monitor/parsers/common_parser.py).
type monitorEventJSON struct {
	Event struct {
		Origin     string `json:"origin"`
		Module     string `json:"module"`
		Interface  string `json:"interface"`
		Component  string `json:"component"`
		Properties struct {
			System      map[string]any    `json:"system"`
			Application map[string]string `json:"application"`
		} `json:"properties"`
		Annotations map[string]any `json:"annotations"`
		Payload     any            `json:"payload"`
	} `json:"event"`
}

// amqpSystem maps the MQTT wire names of system properties to the AMQP
// properties an Event Hubs reader sees (IoT Hub message format,
// learn.microsoft.com azure/iot-hub/iot-hub-devguide-messages-construct).
var amqpSystem = map[string]string{
	"$.mid": "message_id",
	"$.cid": "correlation_id",
	"$.ct":  "content_type",
	"$.ce":  "content_encoding",
}

func monitorEvent(m hubservice.UpstreamMessage, seq int) monitorEventJSON {
	var ev monitorEventJSON
	e := &ev.Event
	e.Origin, e.Module, _ = strings.Cut(m.From, "/")
	if d := m.System["$.cdid"]; d != "" {
		e.Origin = d
	}
	if md := m.System["$.cmid"]; md != "" {
		e.Module = md
	}
	e.Properties.System = map[string]any{}
	for wire, name := range amqpSystem {
		if v, ok := m.System[wire]; ok {
			e.Properties.System[name] = v
		}
	}
	e.Properties.Application = m.Properties
	if e.Properties.Application == nil {
		e.Properties.Application = map[string]string{}
	}
	enqueued := m.Received.UnixMilli()
	e.Annotations = map[string]any{
		"iothub-connection-device-id": e.Origin,
		"iothub-enqueuedtime":         enqueued,
		"iothub-message-source":       "Telemetry",
		"x-opt-sequence-number":       seq,
		"x-opt-enqueued-time":         enqueued,
	}
	if e.Module != "" {
		e.Annotations["iothub-connection-module-id"] = e.Module
	}
	e.Payload = string(m.Body)
	if ct, _ := e.Properties.System["content_type"].(string); strings.Contains(strings.ToLower(ct), "application/json") && json.Valid(m.Body) {
		e.Payload = json.RawMessage(m.Body)
	}
	return ev
}
