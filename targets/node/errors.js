// What a caller may see of an error: a gRPC code and the service's own generic text.

import grpc from '@grpc/grpc-js';

export const S = grpc.status;
export const UNAUTHENTICATED_TEXT = 'unauthenticated';
export const DENIED_TEXT = 'access denied';
export const NOT_FOUND_TEXT = 'no such lab order';

export class Refusal extends Error {
  constructor(code, text) {
    super(text);
    this.code = code;
    this.details = text;
  }
}

export function invalid(text) {
  return new Refusal(S.INVALID_ARGUMENT, text);
}
