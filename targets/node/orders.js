// The business logic of LabOrders. The gate (server.js) has already authenticated the
// caller, checked its scopes and rate; here: arguments, ownership and minimisation.

import {DENIED_TEXT, NOT_FOUND_TEXT, Refusal, S, invalid} from './errors.js';
import {IMMUTABLE, OrderStore, nowTimestamp} from './store.js';

export const MAX_PAGE_SIZE = 50;
const DEFAULT_PAGE_SIZE = 20;
export const MAX_EXPORT = 25;
export const MAX_CONCURRENT_EXPORTS = 2;
const EXPORT_DELAY_MS = 8; // an export reads storage record by record, as real ones do (0.2 s in all)
const MAX_WATCH_MS = 120_000;
const STATUSES = new Set([0, 1, 2, 3, 4]);
const DATE = /^\d{4}-\d{2}-\d{2}$/;
const STATUS_NAMES = ['unspecified', 'ordered', 'collected', 'resulted', 'cancelled'];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function orderId(value, where) {
  if (!Number.isSafeInteger(value) || value <= 0) throw invalid(`${where} must be a positive integer`);
  return value;
}

export class LabOrders {
  /**
   * @param {object} policy policy.json
   * @param {Set<string>} defects
   * @param {string[]} fields LabOrder's field names, from the .proto
   */
  constructor(policy, defects, fields) {
    this.policy = policy;
    this.defects = defects;
    this.fields = new Set(fields);
    this.store = new OrderStore(defects);
    this.exports = new Map();
  }

  /** The fields ``identity`` may see (null: every field), from its scopes. */
  visibleFields(identity) {
    const out = new Set();
    for (const scope of identity.scopes) {
      const allowed = this.policy.fields[scope];
      if (allowed === '*') return null;
      for (const f of allowed ?? []) out.add(f);
    }
    return out;
  }

  orgWide(identity) {
    return this.policy.orgWideScopes.some((s) => identity.scopes.has(s));
  }

  /** Object-level authorization: organisation-wide scopes see all, physicians their orders. */
  maySee(identity, order) {
    if (this.defects.has('idor')) return true; // defect: no object-level check
    return this.orgWide(identity) || order.ordering_provider === identity.subject;
  }

  /** ``order`` as ``identity`` may see it, limited to ``paths`` (null: no mask). */
  project(order, identity, paths = null) {
    const allowed = this.visibleFields(identity);
    const out = {};
    for (const [name, value] of Object.entries(order)) {
      if ((allowed && !allowed.has(name)) || (paths && !paths.includes(name))) continue;
      out[name] = value;
    }
    const clear =
      this.defects.has('raw-ssn') || // defect
      this.policy.clearIdentifierScopes.some((s) => identity.scopes.has(s));
    if (out.ssn && !clear) out.ssn = `***-**-${out.ssn.slice(-4)}`;
    return out;
  }

  /** A mask's paths (null: none, or "*"), each a LabOrder field. */
  maskPaths(mask, where) {
    const paths = mask?.paths ?? [];
    if (paths.length === 0 || (paths.length === 1 && paths[0] === '*')) return null;
    if (!paths.every((p) => this.fields.has(p))) throw invalid(`${where}: unknown field path`);
    return this.defects.has('mask-ignored') ? null : paths; // defect: validated, then dropped
  }

  load(id) {
    const order = this.store.load(id);
    if (!order) throw new Refusal(S.NOT_FOUND, NOT_FOUND_TEXT);
    return order;
  }

  async get(request, ctx) {
    const id = orderId(request.order_id, 'order_id');
    ctx.resource = String(id);
    const paths = this.maskPaths(request.read_mask, 'read_mask');
    const order = this.load(id);
    const emergency = this.policy.emergencyMethods.includes(ctx.method) && ctx.identity.emergencyReason;
    if (!this.maySee(ctx.identity, order) && !emergency) {
      throw new Refusal(S.PERMISSION_DENIED, DENIED_TEXT);
    }
    return {order: this.project(order, ctx.identity, paths)};
  }

  async list(request, ctx) {
    const mrn = request.mrn ?? '';
    ctx.resource = mrn ? `mrn:${mrn}` : '*';
    ctx.query = `mrn=${mrn}&status=${request.status ?? 0}`;
    const status = request.status ?? 0;
    if (this.defects.has('crash-enum')) {
      // Defect: the status is named for the audit query before it is validated; an
      // undeclared number has no name (TypeError).
      ctx.query = `mrn=${mrn}&status=${STATUS_NAMES[status].toUpperCase()}`;
    }
    if (!STATUSES.has(status)) throw invalid('status: unknown value');
    const asked = request.page_size ?? 0;
    if (asked < 0) throw invalid('page_size must not be negative');
    const size = Math.min(asked || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    let after = 0;
    if (request.page_token) {
      after = Number.parseInt(Buffer.from(request.page_token, 'base64url').toString('utf8'), 10);
      if (!Number.isSafeInteger(after) || after < 0) throw invalid('page_token is not valid');
    }
    const hits = this.store
      .all()
      .filter((o) => o.order_id > after && this.maySee(ctx.identity, o))
      .filter((o) => (!mrn || o.mrn === mrn) && (!status || o.status === status));
    const page = hits.slice(0, size);
    const more = hits.length > size;
    const last = page.at(-1)?.order_id;
    return {
      orders: page.map((o) => this.project(o, ctx.identity)),
      next_page_token: more ? Buffer.from(String(last)).toString('base64url') : '',
    };
  }

  async update(request, ctx) {
    const change = request.order ?? {};
    const id = orderId(change.order_id ?? 0, 'order.order_id');
    ctx.resource = String(id);
    const paths = request.update_mask?.paths ?? [];
    if (paths.length === 0) throw invalid('update_mask is required');
    for (const p of paths) {
      if (!this.fields.has(p)) throw invalid('update_mask: unknown field path');
      if (IMMUTABLE.has(p)) throw invalid(`update_mask: ${p} is set by the service`);
    }
    const current = this.store.orders.get(id);
    if (!current) throw new Refusal(S.NOT_FOUND, NOT_FOUND_TEXT);
    if (!this.maySee(ctx.identity, current)) throw new Refusal(S.PERMISSION_DENIED, DENIED_TEXT);
    if (paths.includes('birth_date') && !DATE.test(change.birth_date ?? '')) {
      throw invalid('order.birth_date must be a calendar date (YYYY-MM-DD)');
    }
    if (paths.includes('status') && !STATUSES.has(change.status ?? 0)) {
      throw invalid('order.status: unknown value');
    }
    const next = {...current};
    for (const p of paths) {
      if (change[p] === undefined) delete next[p];
      else next[p] = change[p];
    }
    next.updated_at = nowTimestamp();
    this.store.save(next);
    return {order: this.project(next, ctx.identity)};
  }

  async export(request, ctx, send) {
    ctx.resource = '*';
    const who = ctx.identity.subject;
    const running = this.exports.get(who) ?? 0;
    if (running >= MAX_CONCURRENT_EXPORTS) {
      throw new Refusal(S.RESOURCE_EXHAUSTED, 'export limit reached, try again later');
    }
    const asked = request.limit ?? 0;
    if (asked < 0) throw invalid('limit must not be negative');
    const status = request.status ?? 0;
    if (!STATUSES.has(status)) throw invalid('status: unknown value');
    this.exports.set(who, running + 1);
    try {
      const chosen = this.store.all().filter((o) => !status || o.status === status);
      for (const order of chosen.slice(0, Math.min(asked || MAX_EXPORT, MAX_EXPORT))) {
        await sleep(EXPORT_DELAY_MS);
        if (ctx.cancelled()) return;
        send(this.project(order, ctx.identity));
      }
    } finally {
      this.exports.set(who, this.exports.get(who) - 1);
    }
  }

  async watch(request, ctx, send) {
    const id = orderId(request.order_id, 'order_id');
    ctx.resource = String(id);
    const max = request.max_events ?? 0;
    if (max < 0) throw invalid('max_events must not be negative');
    const interval = Math.min(Math.max(request.interval_ms || 1000, 100), 5000);
    if (!this.maySee(ctx.identity, this.load(id))) {
      throw new Refusal(S.PERMISSION_DENIED, DENIED_TEXT);
    }
    const until = Date.now() + MAX_WATCH_MS;
    for (let sent = 0; !max || sent < max; sent += 1) {
      if (ctx.cancelled() || Date.now() > until) return;
      // A stream ends when its token expires: the clock-skew leeway is for the door (a
      // verifier's clock may trail the issuer's), not for data sent after exp.
      const recheck = !this.defects.has('stream-outlives-token'); // defect: checked at open only
      if (recheck && Date.now() >= ctx.identity.expiresMs) {
        throw new Refusal(S.UNAUTHENTICATED, 'credentials expired');
      }
      const seen = this.project(this.load(id), ctx.identity);
      send({
        order_id: id,
        mrn: seen.mrn,
        status: seen.status,
        results: seen.results ?? [],
        observed_at: nowTimestamp(),
      });
      if (max && sent + 1 >= max) return;
      for (let waited = 0; waited < interval && !ctx.cancelled(); waited += 50) {
        await sleep(Math.min(50, interval - waited));
      }
    }
  }
}
