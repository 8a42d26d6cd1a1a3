// Drives Azure's own Node.js DPS service client
// (azure-iot-provisioning-service), unmodified, for node_test.go. It is
// built from the lab's service connection string file as the lab wrote it,
// so it reaches DPS at the connection string's HostName on port 443, as it
// would reach Azure: no host, port or agent of ours.
//
//   node service.js put      creates the individual TPM enrollment of
//                            REGISTRATION_ID with ENDORSEMENT_KEY (base64),
//                            as an IoT Edge device DEVICE_ID, then reads it
//                            back; prints {"created": ..., "read": ...}
//   node service.js delete   deletes it; prints {}
//
// Environment: CONNSTR_FILE (the lab's service.connstr; the key stays out
// of the environment and the command line), REGISTRATION_ID,
// ENDORSEMENT_KEY, DEVICE_ID. NODE_EXTRA_CA_CERTS must name the lab's CA.
'use strict';

const fs = require('fs');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');

function env(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(name + ' is not set');
  }
  return v;
}

async function main() {
  const step = process.argv[2];
  // The file holds the connection string and a newline, as $(cat FILE) reads it.
  const connStr = fs.readFileSync(env('CONNSTR_FILE'), 'utf8').trim();
  const client = ProvisioningServiceClient.fromConnectionString(connStr);
  const id = env('REGISTRATION_ID');
  let out;
  switch (step) {
    case 'put': {
      const created = await client.createOrUpdateIndividualEnrollment({
        registrationId: id,
        deviceId: env('DEVICE_ID'),
        attestation: { type: 'tpm', tpm: { endorsementKey: env('ENDORSEMENT_KEY') } },
        capabilities: { iotEdge: true },
      });
      const read = await client.getIndividualEnrollment(id);
      out = { created: created.responseBody, read: read.responseBody };
      break;
    }
    case 'delete':
      await client.deleteIndividualEnrollment(id);
      out = {};
      break;
    default:
      throw new Error('unknown step ' + JSON.stringify(step));
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('service.js ' + process.argv[2] + ': ' + (err && err.stack ? err.stack : err));
    process.exit(1);
  },
);
