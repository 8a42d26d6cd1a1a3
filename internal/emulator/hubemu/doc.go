// Package hubemu emulates edgeHub, and IoT Hub's MQTT endpoint for devices
// and modules, as strictly as edgeHub treats what a module sends
// (docs/edge-protocol.md#mqtt-to-edgehub, #telemetry-topics-and-properties, #twin-reconciliation, #edgehub-delivery):
//
//   - MQTT 3.1.1 over TLS only; CONNECT checked like edgeHub: client id
//     equal to the identity, the username rules of MqttUsernameParser, a SAS
//     token verified with the identity's keys (a module's also with its
//     device's key, as edgeHub does) for the hub or gateway host, and
//     CONNACK 5 or 3 as edgeHub answers; a second connection of an identity
//     closes the first; connections whose token has expired are closed at
//     the next re-authentication;
//   - telemetry on the four inbound topic forms with property bags, routed
//     by edgeHub routes to $upstream (a sink the tests read) or to module
//     inputs, and acknowledged only once recorded or queued; retained
//     messages marked mqtt-retain=true as IoT Hub marks them; other topics,
//     $SYS/... included, logged, dropped and still acknowledged, except
//     telemetry with more than one level after events/ and topics with
//     wildcards, which close the connection;
//   - what reaches $upstream metered as IoT Hub bills it (Message.Billed,
//     Message.Units: body, system property values, application property
//     names and values, in 4 KB units; through edgeHub only the system
//     properties edgeHub forwards);
//   - CONNECTs of other protocol levels than 3.1.1, the bridge bit 0x84
//     included, refused with return code 1;
//   - delivery to module inputs one message at a time, waiting for the
//     PUBACK and retrying with backoff until the message's TTL;
//   - module and device twins (GET, reported patches answered 204 without
//     $version, desired pushes only to connected modules) and direct
//     methods; a twin request without $rid closes the connection, as the
//     exception it raises in edgeHub does;
//   - a service API shaped like IoT Hub's REST API (docs/edge-protocol.md#iot-hub-service-api): twins with
//     device tags, methods, automatic deployments (configurations with
//     ETags, target conditions, priorities, layers and metrics) applied to
//     the devices of Config.Devices, applyConfigurationContent, the module
//     identity registry aziot-identityd uses (create, update with
//     If-Match, get, list, delete; sas keys given or generated, which then
//     authenticate the module instead of Config.Key; keyless $edgeAgent and
//     $edgeHub for the IoT Edge devices of Config.Devices), and, with
//     Config.ServicePolicies, service SAS authentication, or a device's
//     own SAS token on its module registry;
//   - simulated edgeAgents for fleets (Config.Agent) that report
//     lastDesiredStatus as edgeAgent does, so deployment metrics count;
//   - faults injected at run time (dropped connections, held PUBACKs,
//     refused CONNECTs, lost twin answers).
//
// The MQTT protocol itself is github.com/mochi-mqtt/server, driven through
// its hooks: everything a client publishes is consumed by the emulator
// (mochi never forwards it between clients), and everything the emulator
// sends is written to the client directly, so that acknowledgements and
// packet identifiers stay under the emulator's control.
//
// A Server is safe for concurrent use. Serve runs it on a listener until its
// context ends; the package hubtest starts one for tests.
package hubemu
