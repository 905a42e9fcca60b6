// Bearer-token authentication: RS256 access tokens (RFC 9068) from the lab's issuer,
// verified with jose against the issuer's published JWKS.

import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  exportSPKI,
  importJWK,
  importSPKI,
  jwtVerify,
} from 'jose';

/** Why a credential was refused, kept for the service's own log (never sent to the caller). */
export class Unauthenticated extends Error {
  constructor(reason) {
    super(reason);
    this.reason = reason;
  }
}

/** The verified caller. */
export class Identity {
  constructor(claims) {
    this.subject = String(claims.sub);
    this.scopes = new Set(String(claims.scope ?? '').split(' ').filter(Boolean));
    this.acr = typeof claims.acr === 'string' ? claims.acr : '';
    this.expiresMs = Number(claims.exp) * 1000;
    this.clientId = typeof claims.client_id === 'string' ? claims.client_id : '';
    const btg = claims.purpose_of_use === 'BTG' && typeof claims.btg_reason === 'string';
    this.emergencyReason = btg ? claims.btg_reason.trim() : '';
  }
}

const BEARER = /^Bearer +([A-Za-z0-9._~+/-]+=*)$/i;

export class Verifier {
  /**
   * @param {object} options issuer, audience, jwksUri, leewayS, subjects (Set of known users),
   *   publicKeyPem (only with the jwks-private defect)
   */
  constructor(options, defects = new Set()) {
    this.options = options;
    this.defects = defects;
    this.keys = createRemoteJWKSet(new URL(options.jwksUri), {
      cooldownDuration: 30_000,
      cacheMaxAge: 600_000,
      timeoutDuration: 3_000,
    });
    // With the jwks-private defect jose refuses the issuer's key set (it carries private
    // members), so the service is deployed with the issuer's public key as PEM instead.
    this.pinned = options.publicKeyPem ? importSPKI(options.publicKeyPem, 'RS256') : null;
  }

  /** The bearer token of ``metadata``: exactly one ``authorization: Bearer <token>``. */
  static bearer(metadata) {
    const values = metadata.get('authorization');
    if (values.length === 0) throw new Unauthenticated('no credentials');
    if (values.length !== 1 || typeof values[0] !== 'string') {
      throw new Unauthenticated('ambiguous credentials');
    }
    const match = BEARER.exec(values[0]);
    if (!match) throw new Unauthenticated('not a bearer token');
    return match[1];
  }

  async identify(metadata) {
    const token = Verifier.bearer(metadata);
    const d = this.defects;
    const checks = {
      algorithms: ['RS256'],
      issuer: this.options.issuer,
      audience: d.has('aud-ignored') ? undefined : this.options.audience, // defect
      typ: d.has('typ-ignored') ? undefined : 'at+jwt', // defect
      clockTolerance: this.options.leewayS,
      requiredClaims: ['exp', 'iat', 'nbf', 'sub', 'jti'],
    };
    let payload;
    try {
      let key = this.pinned ? await this.pinned : this.keys;
      if (d.has('alg-confusion') && /^HS/i.test(String(decodeProtectedHeader(token).alg))) {
        // Defect: one verify call for "whatever the header says", keyed with the PEM text.
        key = new TextEncoder().encode(await this.publicPem());
        checks.algorithms = ['RS256', 'HS256', 'HS384', 'HS512'];
      }
      ({payload} = await jwtVerify(token, key, checks));
    } catch (err) {
      if (err instanceof errors.JOSEError) throw new Unauthenticated(err.code);
      throw new Unauthenticated('malformed token');
    }
    if (!this.options.subjects.has(String(payload.sub))) {
      throw new Unauthenticated('unknown subject');
    }
    return new Identity(payload);
  }

  /** The issuer's public key as PEM (only the alg-confusion defect wants it). */
  async publicPem() {
    if (!this.pem) {
      const jwks = await (await fetch(this.options.jwksUri)).json();
      this.pem = await exportSPKI(await importJWK(jwks.keys[0], 'RS256', {extractable: true}));
    }
    return this.pem;
  }
}
