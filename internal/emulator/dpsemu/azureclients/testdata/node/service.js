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
//   node service.js bulk-create
//                            creates BULK_COUNT enrollments BULK_PREFIX-0, …
//                            with ENDORSEMENT_KEY in one runBulkEnrollmentOperation
//                            (mode create), then creates BULK_PREFIX-0 again;
//                            prints {"created": result, "again": result}
//   node service.js bulk-update
//                            updates them (mode update): device ID
//                            BULK_PREFIX-device-N, provisioning status
//                            disabled; prints {"updated": result}
//   node service.js query    reads every individual enrollment with
//                            createIndividualEnrollmentQuery, PAGE_SIZE at a
//                            time, following the continuation the SDK keeps;
//                            prints {"pages": [[registration IDs], …],
//                            "continuations": [token after each page]}
//   node service.js bulk-update-if-match
//                            enables them again (mode updateIfMatchEtag, as
//                            the SDK's BulkOperationMode spells it), each
//                            with the etag a query read; prints {"updated": result}
//   node service.js bulk-delete
//                            deletes them (mode delete), each with the etag a
//                            query read; prints {"deleted": result}
//
// Environment: CONNSTR_FILE (the lab's service.connstr; the key stays out
// of the environment and the command line), REGISTRATION_ID,
// ENDORSEMENT_KEY, DEVICE_ID, BULK_PREFIX, BULK_COUNT, PAGE_SIZE.
// NODE_EXTRA_CA_CERTS must name the lab's CA.
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

// runBulk runs op with runBulkEnrollmentOperation's callback form: its
// promise form never settles (1.11.2 calls back only when given a
// callback), and node would exit 0 with nothing printed.
function runBulk(client, op) {
  return new Promise((resolve, reject) => {
    client.runBulkEnrollmentOperation(op, (err, result) => (err ? reject(err) : resolve(bulkResult(result))));
  });
}

// readBulk returns the enrollments bulkIDs names as a query reads them,
// etags and all.
async function readBulk(client) {
  const wanted = new Set(bulkIDs());
  const query = client.createIndividualEnrollmentQuery({ query: '*' });
  const enrollments = [];
  while (query.hasMoreResults) {
    const page = await new Promise((resolve, reject) => {
      query.next((err, result) => (err ? reject(err) : resolve(result)));
    });
    enrollments.push(...page.filter((e) => wanted.has(e.registrationId)));
  }
  return enrollments;
}

// bulkIDs returns BULK_PREFIX-0 … BULK_PREFIX-(BULK_COUNT-1).
function bulkIDs() {
  return Array.from({ length: Number(env('BULK_COUNT')) }, (_, i) => env('BULK_PREFIX') + '-' + i);
}

// bulkResult checks a BulkEnrollmentOperationResult the way the SDK's
// interface describes it (errors: an array, empty when isSuccessful) and
// returns it.
function bulkResult(r) {
  if (typeof r !== 'object' || r === null || typeof r.isSuccessful !== 'boolean' || !Array.isArray(r.errors) ||
      r.isSuccessful !== (r.errors.length === 0)) {
    throw new Error('not a BulkEnrollmentOperationResult: ' + JSON.stringify(r));
  }
  for (const e of r.errors) {
    if (typeof e.registrationId !== 'string' || typeof e.errorCode !== 'number' || typeof e.errorStatus !== 'string') {
      throw new Error('not a BulkEnrollmentOperationError: ' + JSON.stringify(e));
    }
  }
  return r;
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
    case 'bulk-create': {
      const enrollments = bulkIDs().map((registrationId) => ({
        registrationId,
        attestation: { type: 'tpm', tpm: { endorsementKey: env('ENDORSEMENT_KEY') } },
      }));
      const created = await runBulk(client, { mode: 'create', enrollments });
      const again = await runBulk(client, { mode: 'create', enrollments: enrollments.slice(0, 1) });
      out = { created, again };
      break;
    }
    case 'bulk-update': {
      const enrollments = bulkIDs().map((registrationId, i) => ({
        registrationId,
        deviceId: env('BULK_PREFIX') + '-device-' + i,
        provisioningStatus: 'disabled',
        attestation: { type: 'tpm', tpm: { endorsementKey: env('ENDORSEMENT_KEY') } },
      }));
      out = { updated: await runBulk(client, { mode: 'update', enrollments }) };
      break;
    }
    case 'query': {
      const pageSize = Number(env('PAGE_SIZE'));
      const query = client.createIndividualEnrollmentQuery({ query: '*' }, pageSize);
      const pages = [];
      const continuations = [];
      // The callback form, as the SDK's samples use it: the Query keeps the
      // continuation token of the last page itself.
      while (query.hasMoreResults) {
        const page = await new Promise((resolve, reject) => {
          query.next((err, result) => (err ? reject(err) : resolve(result)));
        });
        if (!Array.isArray(page)) {
          throw new Error('query page is not an array: ' + JSON.stringify(page));
        }
        pages.push(page.map((e) => e.registrationId));
        continuations.push(query.continuationToken === undefined ? null : query.continuationToken);
        if (pages.length > 100) {
          throw new Error('query does not end: continuations ' + JSON.stringify(continuations.slice(0, 5)));
        }
      }
      out = { pages, continuations };
      break;
    }
    case 'bulk-update-if-match': {
      const enrollments = (await readBulk(client)).map((e) => Object.assign(e, { provisioningStatus: 'enabled' }));
      out = { updated: await runBulk(client, { mode: 'updateIfMatchEtag', enrollments }) };
      break;
    }
    case 'bulk-delete':
      out = { deleted: await runBulk(client, { mode: 'delete', enrollments: await readBulk(client) }) };
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
