// Drives Azure's own Node.js DPS TPM device client, unmodified, for
// node_test.go. Only the wiring is ours: which TPM (a reference simulator
// behind the mssim protocol) and which DPS host and port.
//
//   node dps.js identity   prints {"registrationId","endorsementKey","storageRootKey"}
//   node dps.js register   registers over HTTPS, then prints the registration
//                          result and an HMAC of SIGN_DATA made with the key the
//                          client imported into the TPM
//
// Environment: TPM_HOST, TPM_PORT (mssim command port; the platform port is
// TPM_PORT+1), DPS_HOST, DPS_PORT, ID_SCOPE, SIGN_DATA (base64).
// NODE_EXTRA_CA_CERTS must name the emulator's CA.
'use strict';

const https = require('https');
const { Tpm } = require('tss.js');
const { TpmSecurityClient } = require('azure-iot-security-tpm');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const HttpBase = require('azure-iot-http-base').Http;

function env(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(name + ' is not set');
  }
  return v;
}

function promisify(fn) {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
}

async function identity(security) {
  const ek = await promisify((cb) => security.getEndorsementKey(cb));
  const srk = await promisify((cb) => security.getStorageRootKey(cb));
  const registrationId = await promisify((cb) => security.getRegistrationId(cb));
  return {
    registrationId: registrationId,
    endorsementKey: ek.toString('base64'),
    storageRootKey: srk.toString('base64'),
  };
}

async function register(security) {
  // The SDK hands the host to https.request, which takes no port in it, and
  // offers no port option (azure-iot-http-base http.js buildRequest). An
  // agent's defaultPort is what https.request falls back to, so the SDK's
  // own documented setOptions({http: {agent}}) points it at the emulator.
  const agent = new https.Agent({ keepAlive: false });
  agent.defaultPort = Number(env('DPS_PORT'));
  const httpBase = new HttpBase();
  httpBase.setOptions({ http: { agent: agent } });
  const transport = new Http(httpBase);

  const client = ProvisioningDeviceClient.create(env('DPS_HOST'), env('ID_SCOPE'), transport, security);
  const result = await client.register();
  const data = Buffer.from(env('SIGN_DATA'), 'base64');
  const sig = await promisify((cb) => security.signWithIdentity(data, cb));
  return {
    status: result.status,
    operationId: result.operationId,
    registrationId: result.registrationState && result.registrationState.registrationId,
    assignedHub: result.registrationState && result.registrationState.assignedHub,
    deviceId: result.registrationState && result.registrationState.deviceId,
    registrationStatus: result.registrationState && result.registrationState.status,
    signature: sig.toString('base64'),
  };
}

async function main() {
  const step = process.argv[2];
  const tpm = new Tpm(true, env('TPM_HOST'), Number(env('TPM_PORT')));
  const security = new TpmSecurityClient(undefined, tpm);
  try {
    let out;
    switch (step) {
      case 'identity':
        out = await identity(security);
        break;
      case 'register':
        out = await register(security);
        break;
      default:
        throw new Error('unknown step ' + JSON.stringify(step));
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    tpm.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('dps.js ' + process.argv[2] + ': ' + (err && err.stack ? err.stack : err));
    if (err && err.responseBody) {
      console.error('response body: ' + err.responseBody);
    }
    if (err && err.result) {
      console.error('result: ' + JSON.stringify(err.result));
    }
    process.exit(1);
  },
);
