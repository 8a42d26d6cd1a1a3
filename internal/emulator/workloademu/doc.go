// Package workloademu emulates the IoT Edge workload API that aziot-edged
// serves to modules over a Unix socket (docs/edge-protocol.md#workload-api), as strictly
// as the real daemon answers what the Azure SDKs and module/workload send:
//
//   - POST /modules/{m}/genid/{g}/sign: HMAC-SHA256 with the module's
//     identity key (docs/edge-protocol.md#workload-api);
//   - GET /trust-bundle and GET /manifest-trust-bundle: PEM text in JSON
//     (docs/edge-protocol.md#workload-api);
//   - POST /modules/{m}/genid/{g}/certificate/server: a server certificate
//     issued by an internal/emulator/pki CA (docs/edge-protocol.md#workload-api);
//   - POST /modules/{m}/certificate/identity: recognised, answered 500
//     because internal/emulator/pki cannot issue client certificates (docs/edge-protocol.md#workload-api);
//   - the request rules of aziot's http-common server: api-version first,
//     {"message"} errors, body rules, 404/400/422/408 (docs/edge-protocol.md#workload-api);
//   - per socket, at most Config.MaxConcurrent live connections, the rest
//     closed without a reply (docs/edge-protocol.md#workload-api), and optionally the caller's peer pid
//     checked against the module in the path (403).
//
// A Server is safe for concurrent use; Serve may run on several sockets at
// once (aziot-edged has one socket per module), each with its own cap.
package workloademu
