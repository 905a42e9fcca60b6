// A small grpc-js service as a Node team would write it from the grpc-js examples: TLS from
// the files it is given, bearer tokens checked in each handler, grpc.health.v1 served, and
// server reflection switched on with @grpc/reflection (v1 and v1alpha), for everyone.
//
//   NODE_PATH=targets/node/node_modules node server.cjs CONFIG.json
//
// CONFIG.json: {"cert": PATH, "key": PATH, "tokens": {TOKEN: SUBJECT}}. It prints one line
// `LISTENING <port>` (127.0.0.1, a free port) and exits when its standard input closes.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const {ReflectionService} = require('@grpc/reflection');
const {HealthImplementation} = require('grpc-health-check');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const definition = protoLoader.loadSync(path.join(__dirname, 'claims.proto'), {
  keepCase: true,
  longs: Number,
  defaults: false,
});
const claims = grpc.loadPackageDefinition(definition).acme.claims.v1;

// Synthetic claims: member m-1 has two, m-2 one.
const CLAIMS = [
  {claim_id: 'c-100', member_id: 'm-1', procedure_code: '99213', billed_cents: 12500},
  {claim_id: 'c-101', member_id: 'm-1', procedure_code: '80053', billed_cents: 4300},
  {claim_id: 'c-200', member_id: 'm-2', procedure_code: '93000', billed_cents: 6100},
];

function subject(call) {
  const [value] = call.metadata.get('authorization');
  const match = /^Bearer (\S+)$/.exec(typeof value === 'string' ? value : '');
  return match ? config.tokens[match[1]] : undefined;
}

function unauthenticated() {
  return {code: grpc.status.UNAUTHENTICATED, details: 'missing or invalid token'};
}

const handlers = {
  getClaim(call, callback) {
    if (!subject(call)) return callback(unauthenticated());
    const claim = CLAIMS.find((c) => c.claim_id === call.request.claim_id);
    if (!claim) return callback({code: grpc.status.NOT_FOUND, details: 'no such claim'});
    return callback(null, claim);
  },
  listClaims(call) {
    if (!subject(call)) return call.destroy(unauthenticated());
    const size = Math.min(call.request.page_size || 10, 10);
    const own = CLAIMS.filter((c) => c.member_id === call.request.member_id);
    for (const claim of own.slice(0, size)) call.write(claim);
    return call.end();
  },
};

const server = new grpc.Server();
server.addService(claims.Claims.service, {
  GetClaim: handlers.getClaim,
  ListClaims: handlers.listClaims,
});
new HealthImplementation({'': 'SERVING', 'acme.claims.v1.Claims': 'SERVING'}).addToServer(server);
new ReflectionService(definition).addToServer(server);

const credentials = grpc.ServerCredentials.createSsl(null, [
  {cert_chain: fs.readFileSync(config.cert), private_key: fs.readFileSync(config.key)},
]);
server.bindAsync('127.0.0.1:0', credentials, (error, port) => {
  if (error) {
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`LISTENING ${port}\n`);
});
process.stdin.on('end', () => server.tryShutdown(() => process.exit(0)));
process.stdin.resume();
