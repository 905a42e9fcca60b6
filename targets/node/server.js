// LabOrders: the bundled Node (grpc-js) reference ePHI service, compliant by construction.
//
//   node server.js CONFIG.json
//
// prints one line `LISTENING <port>` when it serves, and exits on SIGTERM or when its
// standard input closes. Built the way a careful Node team would build it:
//
// * TLS with client certificates required (grpc-js), AEAD suites only, reflection off,
//   grpc.health.v1 served (grpc-health-check);
// * RS256 bearer access tokens (typ at+jwt) verified with jose against the issuer's JWKS,
//   fetched over HTTP as real services do; one message for every authentication failure;
// * per-method scopes from policy.json, deny by default; step-up (acr) on writes, refused
//   with UNAUTHENTICATED as RFC 9470's insufficient_user_authentication;
// * physicians see only the orders they placed; break-glass tokens open single reads;
// * role field allowlists, field masks, identifiers masked for all but admins;
// * per-subject rate limits, bounded exports, pages, streams and message sizes;
// * a FHIR AuditEvent per call (denied ones too), hash-chained (audit.js), and a pino
//   application log that names order IDs and subjects, never field values or tokens;
// * sanitized errors with the service's own texts.
//
// A defect (targets/catalog.py, REFERENCE_NODE) changes exactly one of these.

import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import {ReflectionService} from '@grpc/reflection';
import {HealthImplementation} from 'grpc-health-check';
import pino from 'pino';

import {MAX_HEADER_LIST_BYTES, guard} from './edge.js';
import {AuditTrail, alertEvent, callEvent, startedEvent} from './audit.js';
import {Unauthenticated, Verifier} from './auth.js';
import {DENIED_TEXT, Refusal, S, UNAUTHENTICATED_TEXT} from './errors.js';
import {LabOrders} from './orders.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PACKAGE = 'hipaagrpc.labs.v1';
export const MAX_RECV_BYTES = 2 * 1024 * 1024;
export const MAX_CONCURRENT_STREAMS = 64;
const RATE_RPS = 40;
const RATE_BURST = 6;
const ALERT_BURST = 15;
const ALERT_WINDOW_MS = 60_000;
const CODE_NAMES = Object.fromEntries(
  Object.entries(S).map(([name, code]) => [
    code,
    name.toLowerCase().replace(/(^|_)([a-z])/g, (_, __, c) => c.toUpperCase()),
  ]),
);

function loadProto() {
  return protoLoader.loadSync(path.join(HERE, 'proto', 'lab_orders.proto'), {
    keepCase: true,
    longs: Number,
    enums: Number,
    defaults: false,
    oneofs: true,
  });
}

function peerAddress(call) {
  const peer = call.getPeer();
  const at = peer.lastIndexOf(':');
  return (at > 0 ? peer.slice(0, at) : peer).replace(/^\[|\]$/g, '');
}

function nowIso() {
  return new Date().toISOString();
}

/** Authentication, authorization, rate limits and the audit event of every call. */
class Gate {
  constructor(config, policy, verifier, audit, log) {
    this.config = config;
    this.policy = policy;
    this.verifier = verifier;
    this.audit = audit;
    this.log = log;
    this.defects = config.defects;
    this.buckets = new Map();
    this.failures = new Map();
    this.alerted = new Map();
  }

  rateOk(subject) {
    if (this.defects.has('no-rate-limit')) return true;
    const now = Date.now();
    const [tokens, last] = this.buckets.get(subject) ?? [RATE_BURST, now];
    const filled = Math.min(RATE_BURST, tokens + ((now - last) / 1000) * RATE_RPS);
    const ok = filled >= 1;
    this.buckets.set(subject, [ok ? filled - 1 : filled, now]);
    return ok;
  }

  /** The caller's identity and the method's rule, or a Refusal. */
  async admit(method, call) {
    const rule = this.policy.methods[method];
    let identity;
    try {
      identity = await this.verifier.identify(call.metadata);
    } catch (err) {
      if (!(err instanceof Unauthenticated)) throw err;
      this.failedAuthentication(peerAddress(call), err.reason, call.metadata);
      throw new Refusal(S.UNAUTHENTICATED, UNAUTHENTICATED_TEXT);
    }
    // The default-allow defect: a rule keyed by the wrong name leaves ListLabOrders without
    // one, and a method without a rule is open to every signed-in caller.
    const forgotten = this.defects.has('default-allow') && method.endsWith('/ListLabOrders');
    const allowed = forgotten || (rule && rule.scopes.some((s) => identity.scopes.has(s)));
    if (!allowed) return [identity, new Refusal(S.PERMISSION_DENIED, DENIED_TEXT)];
    const stepUp = rule.stepUp && !this.defects.has('no-step-up'); // defect
    if (stepUp && identity.acr !== this.policy.stepUpAcr) {
      return [identity, new Refusal(S.UNAUTHENTICATED, 'insufficient_user_authentication')];
    }
    if (!this.rateOk(identity.subject)) {
      return [identity, new Refusal(S.RESOURCE_EXHAUSTED, 'too many requests, slow down')];
    }
    return [identity, null];
  }

  failedAuthentication(address, reason, metadata) {
    const entry = {event: 'authn_failed', peer: address, reason};
    if (this.defects.has('token-in-logs')) entry.metadata = metadata.getMap(); // defect
    this.log.warn(entry, 'authentication failed');
    const now = Date.now();
    const recent = (this.failures.get(address) ?? []).filter((t) => now - t < ALERT_WINDOW_MS);
    recent.push(now);
    this.failures.set(address, recent);
    const quiet = now - (this.alerted.get(address) ?? -Infinity) > ALERT_WINDOW_MS;
    if (recent.length >= ALERT_BURST && quiet) {
      this.alerted.set(address, now);
      this.audit.append(alertEvent(nowIso(), address, recent.length));
      this.log.warn({event: 'security_alert', peer: address}, 'authentication failure burst');
    }
  }

  /** Write the call's audit event and log line. */
  record(entry) {
    const {method, identity, code, messages, resource, query, started} = entry;
    const rule = this.policy.methods[method];
    const emergency = identity?.emergencyReason ?? '';
    // The audit-success-only defect: only calls that succeeded are audited.
    if (!(this.defects.has('audit-success-only') && code !== S.OK)) {
      this.audit.append(
        callEvent({
          method,
          action: rule ? rule.action : 'E',
          recorded: nowIso(),
          code,
          codeName: CODE_NAMES[code] ?? String(code),
          subject: identity?.subject ?? '',
          clientId: identity?.clientId ?? '',
          issuer: this.policy.issuer,
          peer: entry.peer,
          resource: resource ?? '*',
          query,
          messages,
          emergencyReason: emergency,
        }),
        Boolean(emergency),
      );
    }
    this.log.info(
      {method, code: CODE_NAMES[code], sub: identity?.subject ?? '-', resource, ms: Date.now() - started},
      'rpc',
    );
  }
}

/** grpc-js status for an error thrown by a handler: a Refusal as it is, anything else INTERNAL. */
function statusOf(err, log, method, defects) {
  if (err instanceof Refusal) {
    const verbose = defects.has('verbose-errors') && err.code !== S.UNAUTHENTICATED; // defect
    return {code: err.code, details: verbose ? `${err.details}\n${err.stack}` : err.details};
  }
  const ref = Math.random().toString(16).slice(2, 10);
  log.error({method, error: err?.name ?? 'Error', ref}, 'handler failed');
  let details = `internal error (ref ${ref})`;
  if (defects.has('verbose-errors')) details += `\n${err?.stack ?? ''}`;
  return {code: S.INTERNAL, details};
}

/** A unary handler: admitted, run, audited. ``impl(request, ctx)`` returns the response. */
function unary(gate, method, impl) {
  return (call, callback) => {
    const ctx = {method, peer: peerAddress(call), started: Date.now(), messages: 0, resource: null};
    gate
      .admit(method, call)
      .then(([identity, refusal]) => {
        ctx.identity = identity;
        if (refusal) throw refusal;
        if (gate.defects.has('phi-in-logs') && method.endsWith('/UpdateLabOrder')) {
          gate.log.info({request: call.request}, 'update request'); // defect
        }
        return impl(call.request, ctx);
      })
      .then((response) => {
        gate.record({...ctx, code: S.OK, messages: 1});
        callback(null, response);
      })
      .catch((err) => {
        if (gate.defects.has('crash-enum') && !(err instanceof Refusal)) {
          // Defect: `catch (err) { callback(err) }`: grpc-js answers UNKNOWN with its message.
          gate.record({...ctx, code: S.UNKNOWN});
          callback(err);
          return;
        }
        const status = statusOf(err, gate.log, method, gate.defects);
        gate.record({...ctx, code: status.code});
        callback(status);
      });
  };
}

/** A server-streaming handler: ``impl(request, ctx, send)`` resolves when the stream is done. */
function serverStream(gate, method, impl) {
  return (call) => {
    const ctx = {method, peer: peerAddress(call), started: Date.now(), messages: 0, resource: null};
    ctx.cancelled = () => call.cancelled;
    const send = (message) => {
      ctx.messages += 1;
      call.write(message);
    };
    gate
      .admit(method, call)
      .then(([identity, refusal]) => {
        ctx.identity = identity;
        if (refusal) throw refusal;
        return impl(call.request, ctx, send);
      })
      .then(() => {
        gate.record({...ctx, code: call.cancelled ? S.CANCELLED : S.OK});
        call.end();
      })
      .catch((err) => {
        const status = statusOf(err, gate.log, method, gate.defects);
        gate.record({...ctx, code: status.code});
        call.emit('error', status);
      });
  };
}

function credentials(config) {
  if (!config.tls) return grpc.ServerCredentials.createInsecure();
  const read = (p) => fs.readFileSync(p);
  const creds = grpc.ServerCredentials.createSsl(
    read(config.tls.ca),
    [{private_key: read(config.tls.key), cert_chain: read(config.tls.cert)}],
    !config.defects.has('no-client-auth'), // defect: checkClientCertificate left false
  );
  if (config.defects.has('client-cert-expiry-unchecked')) {
    // Defect: OpenSSL's verdict is only read (rejectUnauthorized off; grpc-js 1.14 keeps
    // its http2 options here), and checkClientCerts below lets CERT_HAS_EXPIRED through.
    creds.serverConstructorOptions.rejectUnauthorized = false;
  }
  return creds;
}

/** The client-cert-expiry-unchecked defect: the service's own reading of OpenSSL's verdict. */
function checkClientCerts(server) {
  for (const h2 of server.http2Servers.keys()) {
    const inner = h2.listeners('secureConnection');
    h2.removeAllListeners('secureConnection');
    h2.on('secureConnection', (socket) => {
      const presented = Object.keys(socket.getPeerCertificate() ?? {}).length > 0;
      // A grace for clients late to rotate their certificates: expired is let in.
      const expired = socket.authorizationError === 'CERT_HAS_EXPIRED';
      if (!presented || !(socket.authorized || expired)) {
        socket.destroy();
        return;
      }
      for (const listener of inner) listener.call(h2, socket);
    });
  }
}

async function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  config.defects = new Set(config.defects ?? []);
  const policy = JSON.parse(fs.readFileSync(path.join(HERE, 'policy.json'), 'utf8'));
  const log = pino(
    {
      base: {service: 'lab-orders'},
      redact: {paths: ['authorization', '*.authorization', 'token'], censor: '[redacted]'},
    },
    pino.destination({dest: config.appLog, sync: true, mode: 0o600}),
  );
  const audit = new AuditTrail(config.auditLog, config.defects);
  audit.append(startedEvent(nowIso()));
  const subjects = new Set([...policy.principals.map((p) => p.sub), ...policy.otherSubjects]);
  const verifier = new Verifier(
    {
      issuer: policy.issuer,
      audience: policy.audience,
      jwksUri: config.jwksUri,
      publicKeyPem: config.issuerPublicKey ? fs.readFileSync(config.issuerPublicKey, 'utf8') : null,
      leewayS: config.leewayS,
      subjects,
    },
    config.defects,
  );
  const gate = new Gate(config, policy, verifier, audit, log);
  const definition = loadProto();
  const labs = grpc.loadPackageDefinition(definition).hipaagrpc.labs.v1;
  const fields = definition[`${PACKAGE}.LabOrder`].type.field.map((f) => f.name);
  const orders = new LabOrders(policy, config.defects, fields);
  const svc = `/${PACKAGE}.LabOrders`;
  const server = new grpc.Server({
    // The no-size-limit defect raises the limit far past what the service needs.
    'grpc.max_receive_message_length': config.defects.has('no-size-limit')
      ? 256 * 1024 * 1024
      : MAX_RECV_BYTES,
    'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
  });
  // Advertise the header-list bound edge.js enforces (grpc-js has no option for it).
  server.commonServerOptions.settings = {
    ...server.commonServerOptions.settings,
    maxHeaderListSize: MAX_HEADER_LIST_BYTES,
  };
  server.addService(labs.LabOrders.service, {
    GetLabOrder: unary(gate, `${svc}/GetLabOrder`, (r, c) => orders.get(r, c)),
    ListLabOrders: unary(gate, `${svc}/ListLabOrders`, (r, c) => orders.list(r, c)),
    UpdateLabOrder: unary(gate, `${svc}/UpdateLabOrder`, (r, c) => orders.update(r, c)),
    ExportLabOrders: serverStream(gate, `${svc}/ExportLabOrders`, (r, c, s) => orders.export(r, c, s)),
    WatchResults: serverStream(gate, `${svc}/WatchResults`, (r, c, s) => orders.watch(r, c, s)),
  });
  const trail = `/${PACKAGE}.AuditTrail`;
  const refuse = () => Promise.reject(new Refusal(S.PERMISSION_DENIED, DENIED_TEXT));
  server.addService(labs.AuditTrail.service, {
    RedactEntry: unary(gate, `${trail}/RedactEntry`, refuse),
    PurgeEntries: unary(gate, `${trail}/PurgeEntries`, refuse),
  });
  const health = new HealthImplementation({'': 'SERVING', [`${PACKAGE}.LabOrders`]: 'SERVING'});
  health.addToServer(server);
  if (config.defects.has('reflection')) new ReflectionService(definition).addToServer(server);
  const port = await new Promise((resolve, reject) => {
    server.bindAsync(`${config.host}:0`, credentials(config), (err, bound) =>
      err ? reject(err) : resolve(bound),
    );
  });
  guard(server);
  if (config.defects.has('client-cert-expiry-unchecked')) checkClientCerts(server);
  log.info({port}, 'serving');
  process.stdout.write(`LISTENING ${port}\n`);
  const stop = () => {
    server.forceShutdown();
    audit.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}

main().catch((err) => {
  process.stderr.write(`lab-orders failed to start: ${err?.message ?? err}\n`);
  process.exit(1);
});
