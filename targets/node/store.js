// Synthetic lab orders in memory, a read cache, and what each caller may see of them.

export const FIRST_ID = 1001;
export const ORDER_COUNT = 60;
export const CACHE_TTL_MS = 2000;
/** Fields a caller may never set: the service derives them. */
export const IMMUTABLE = new Set(['order_id', 'mrn', 'ordering_provider', 'updated_at']);

const GIVEN = ['Ada', 'Bram', 'Cleo', 'Dario', 'Esme', 'Femi', 'Greta', 'Hugo', 'Ines', 'Jonas'];
const FAMILY = ['Ashby', 'Brook', 'Calder', 'Dunmore', 'Ellery', 'Fairlie', 'Garrow', 'Hale'];
const PANELS = [
  ['24323-8', 'Comprehensive metabolic panel', '80053'],
  ['58410-2', 'Complete blood count', '85025'],
  ['57698-3', 'Lipid panel', '80061'],
  ['4548-4', 'Hemoglobin A1c', '83036'],
];

function nowTimestamp(ms = Date.now()) {
  return {seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6};
}

export {nowTimestamp};

/** The seeded orders: the first half ordered by physician u-2001, the rest by u-2002. */
export function seed() {
  const orders = new Map();
  for (let i = 0; i < ORDER_COUNT; i += 1) {
    const id = FIRST_ID + i;
    const p = i % 25; // 25 patients, several orders each
    const [loinc, display, cpt] = PANELS[i % PANELS.length];
    orders.set(id, {
      order_id: id,
      mrn: `M${700100 + p}`,
      given_name: GIVEN[p % GIVEN.length],
      family_name: FAMILY[(p * 3) % FAMILY.length],
      birth_date: `19${60 + (p % 40)}-0${1 + (p % 9)}-2${p % 8}`,
      ssn: `9${String(10 + p).padStart(2, '0')}-7${p % 10}-${String(3000 + p * 7).padStart(4, '0')}`,
      phone: `+1-202-555-01${String(p).padStart(2, '0')}`,
      email: `pt${p}@example.org`,
      street: `${p + 3} Synthetic Way`,
      city: 'Testville',
      ordering_provider: i < ORDER_COUNT / 2 ? 'u-2001' : 'u-2002',
      test_code: loinc,
      status: 1 + (i % 3),
      clinical_indication: `screening, synthetic case ${p}`,
      results:
        i % 3 === 2
          ? [{loinc_code: loinc, display, value: `${(4 + (i % 5) / 10).toFixed(1)}`, unit: 'mmol/L', interpretation: 'N'}]
          : [],
      billing_code: cpt,
      insurance_member_id: `HPB-${80000 + p}`,
      collected_at: nowTimestamp(Date.UTC(2026, 10, 1 + (i % 27), 9, 30)),
      updated_at: nowTimestamp(),
    });
  }
  return orders;
}

/** A deep copy of an order (messages are plain objects). */
export function copy(order) {
  return structuredClone(order);
}

export class OrderStore {
  constructor(defects) {
    this.orders = seed();
    this.cache = new Map();
    this.staleCache = defects.has('stale-cache');
  }

  /** An order through the read cache (TTL, invalidated on every write). */
  load(id) {
    const hit = this.cache.get(id);
    const now = Date.now();
    if (hit && (hit.until > now || this.staleCache)) return hit.order;
    const order = this.orders.get(id);
    if (!order) return null;
    const kept = copy(order);
    this.cache.set(id, {until: now + CACHE_TTL_MS, order: kept});
    return kept;
  }

  save(order) {
    this.orders.set(order.order_id, copy(order));
    if (!this.staleCache) this.cache.delete(order.order_id);
  }

  all() {
    return [...this.orders.values()].sort((a, b) => a.order_id - b.order_id);
  }
}
