// Package manifest renders and checks IoT Edge deployment manifests
// (docs/edge-protocol.md#deployments): Render fills a JSON template with
// values and normalizes what IoT Hub wants spelled out (createOptions as
// 512-character string chunks, env values wrapped, images pinned to
// digests); Validate checks a standard or layered deployment against the
// rules edgeAgent, edgeHub and IoT Hub apply, and names every problem by
// its JSON path, so a bad manifest fails here rather than on the device
// an hour after rollout. Validate, ParseRoute and Render are safe for
// concurrent use; SetValue changes the Values it is given.
package manifest
