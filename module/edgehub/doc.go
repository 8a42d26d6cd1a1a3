// Package edgehub is a module's (or device's) MQTT session with edgeHub or
// IoT Hub (docs/edge-protocol.md#mqtt-to-edgehub, #sas-tokens-for-edgehub, #telemetry-topics-and-properties): MQTT 3.1.1 over TLS verified against the
// trust bundle and the gateway's host name, client ID, user name and SAS
// password exactly as edgeHub parses them, and a token that is renewed by
// reconnecting at 80% of its life, because MQTT 3.1.1 has no in-band
// re-authentication.
//
// One Session keeps one connection healthy for as long as its Run runs:
// it retries with jittered backoff and never gives up, answers CONNACK 5
// with a fresh token, restores its subscriptions on every connect, and
// re-sends a QoS 1 publish whose PUBACK the connection did not live to
// see, with the same $.mid. Receivers of telemetry dedupe on $.mid.
package edgehub
