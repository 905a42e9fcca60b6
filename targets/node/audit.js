// The audit trail: one FHIR R4 AuditEvent per line (IHE BALP fields), hash-chained.
//
// Each record carries its own sequence number and the previous record's hash inside it, as
// extensions 0 and 1; extension 2 flags break-glass access. A record's hash is
// SHA-256 over its RFC 8785 (JCS) canonical form, extensions included: nothing is left out,
// and no record stores its own hash (the next record's extension 1 holds it). The first
// record links to 64 zeros. Lines are written as JSON.stringify gives them, not
// canonicalised: a verifier canonicalises each record itself.
//
// No request ID is echoed: a call's event is found by method, caller and time.

import crypto from 'node:crypto';
import fs from 'node:fs';

import canonicalize from 'canonicalize';

export const SEQ_URL = 'https://labs.hipaa.test/fhir/StructureDefinition/audit-sequence';
export const PREV_URL = 'https://labs.hipaa.test/fhir/StructureDefinition/audit-previous-hash';
export const BTG_URL = 'https://labs.hipaa.test/fhir/StructureDefinition/break-glass';
export const GENESIS = '0'.repeat(64);
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
export const GRPC_METHOD = 'urn:hipaagrpc:grpc-method';
export const SECURITY_ALERT = '110113';

/** FHIR's outcome code for a gRPC status: success, minor (the caller's) or serious failure. */
function fhirOutcome(code) {
  if (code === 0) return '0';
  return [2, 13, 15].includes(code) ? '8' : '4';
}

function sha256(text) {
  return crypto.createHash('sha256').update(text, 'utf8').digest('hex');
}

export function hashOf(record) {
  return sha256(canonicalize(record));
}

export class AuditTrail {
  constructor(path, defects) {
    this.path = path;
    this.fd = fs.openSync(path, 'a', 0o600);
    this.seq = 0;
    this.prev = GENESIS;
    this.defects = defects;
  }

  /** Seal ``event`` (an AuditEvent without the chain) into the trail; returns its id. */
  append(event, breakGlass = false) {
    if (this.fd === null) return null;
    this.seq += 1;
    const record = {
      resourceType: 'AuditEvent',
      id: crypto.randomUUID(),
      extension: [
        {url: SEQ_URL, valueInteger: this.seq},
        {url: PREV_URL, valueString: this.prev},
        {url: BTG_URL, valueBoolean: breakGlass},
      ],
      ...event,
    };
    // The json-stringify-chain defect hashes the line as written, not the RFC 8785 form.
    this.prev = this.defects.has('json-stringify-chain')
      ? sha256(JSON.stringify(record))
      : hashOf(record);
    fs.writeSync(this.fd, JSON.stringify(record) + '\n');
    return record.id;
  }

  close() {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** The AuditEvent of one call (BALP: a RESTful-style activity on one order or query). */
export function callEvent(call) {
  const agent = {
    type: {coding: [{system: PARTICIPATION, code: 'IRCP', display: 'information recipient'}]},
    who: call.subject
      ? {identifier: {system: call.issuer, value: call.subject}}
      : {display: 'unauthenticated caller'},
    requestor: true,
    network: {address: call.peer, type: '2'},
  };
  if (call.clientId) agent.altId = call.clientId;
  const entity = {
    what: {identifier: {system: 'urn:hipaagrpc:lab-order', value: call.resource}},
    type: {system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2'},
    role: {system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '4'},
    detail: [{type: 'messages', valueString: String(call.messages)}],
  };
  if (call.query) entity.query = Buffer.from(call.query, 'utf8').toString('base64');
  const event = {
    type: {system: EVENT_TYPE, code: 'rest', display: 'RESTful Operation'},
    subtype: [{system: GRPC_METHOD, code: call.method}],
    action: call.action,
    recorded: call.recorded,
    outcome: fhirOutcome(call.code),
    outcomeDesc: call.codeName,
    agent: [agent, serverAgent()],
    source: source(),
    entity: [entity],
  };
  if (call.emergencyReason) {
    event.purposeOfEvent = [
      {coding: [{system: ACT_REASON, code: 'BTG', display: 'break the glass'}],
        text: call.emergencyReason},
    ];
  }
  return event;
}

function serverAgent() {
  return {
    type: {coding: [{system: DCM, code: '110152', display: 'Destination Role ID'}]},
    who: {display: 'lab-orders'},
    requestor: false,
  };
}

function source() {
  return {
    site: 'lab-orders',
    observer: {display: 'lab-orders (grpc-js)'},
    type: [{system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4'}],
  };
}

/** The service started: the trail's first record. */
export function startedEvent(recorded) {
  return {
    type: {system: DCM, code: '110100', display: 'Application Activity'},
    subtype: [{system: DCM, code: '110120', display: 'Application Start'}],
    action: 'E',
    recorded,
    outcome: '0',
    outcomeDesc: 'Ok',
    agent: [serverAgent()],
    source: source(),
  };
}

/** Too many failed authentications from one address: a security alert (DICOM 110113). */
export function alertEvent(recorded, address, count) {
  return {
    type: {system: DCM, code: SECURITY_ALERT, display: 'Security Alert'},
    subtype: [{system: 'urn:hipaagrpc:alert', code: 'auth-failure-burst'}],
    action: 'E',
    recorded,
    outcome: '4',
    outcomeDesc: `${count} failed authentications`,
    agent: [
      {
        type: {coding: [{system: PARTICIPATION, code: 'IRCP'}]},
        who: {display: 'unauthenticated caller'},
        requestor: true,
        network: {address, type: '2'},
      },
      serverAgent(),
    ],
    source: source(),
    entity: [{what: {identifier: {system: 'urn:ietf:rfc:791', value: address}}}],
  };
}
