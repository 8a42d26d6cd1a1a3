// Package workload is a module's client of the IoT Edge workload API that
// aziot-edged serves on a Unix socket (docs/edge-protocol.md#workload-api): HMAC signing
// with the module's identity key, the SAS signer of the edgeHub session,
// and the trust bundle that edgeHub's certificate chains to.
//
// The socket allows ten simultaneous connections per module and closes
// the rest without a reply, and it disappears while aziot-edged restarts
// (docs/edge-protocol.md#workload-api); so a Client retries a call that got no reply, with jittered
// backoff, until its context ends. A 4xx answer is final, a 5xx is
// retried a few times. Each call uses its own connection, so that an idle
// one never holds one of the ten slots. A Client is safe for concurrent
// use.
package workload
