/** Close codes of the relay wire protocol v1 (docs: DESIGN §2). */
export const CloseCode = {
  /** Normal closure. */
  Normal: 1000,
  /** The connection dropped without a close frame. */
  Abnormal: 1006,
  /** A frame was larger than the relay's limit. */
  TooLarge: 1009,
  /** The relay is restarting: reconnect (maybe to another instance). */
  Restarting: 1012,
  /** The relay closed a slow consumer: reconnect with backoff. */
  SlowConsumer: 4008,
  /** The connection reached the relay's `limits.max_connection_age`: reconnect at once (no backoff) and resume. */
  MaxAge: 4012,
  /** Too many messages: reconnect with backoff. */
  TooManyMessages: 4029,
  /** Terminal: the token was refused. */
  Unauthorized: 4501,
  /** Terminal: a newer connection with the same token+env replaced this one. */
  Replaced: 4502,
  /** Terminal: this env may not connect. */
  EnvNotAllowed: 4503,
  /** Terminal: too many connections for this token. */
  TooManyConnections: 4504,
} as const;

/** Close codes 4500–4999 are terminal: the SDK never reconnects after them. */
export function isTerminalCloseCode(code: number): boolean {
  return code >= 4500 && code <= 4999;
}

/** The error code the SDK uses when a terminal close code ends the client. */
export function terminalErrorCode(code: number): string {
  switch (code) {
    case CloseCode.Unauthorized:
      return 'unauthorized';
    case CloseCode.Replaced:
      return 'replaced';
    case CloseCode.EnvNotAllowed:
      return 'env_not_allowed';
    case CloseCode.TooManyConnections:
      return 'too_many_connections';
    default:
      return 'closed';
  }
}

/**
 * The error every rejected `send()` promise and every `onError` handler gets.
 *
 * `code` is either the code of a `relay.error` frame (for example
 * `invalid_message`, `rate_limited`; see docs/protocol.md) or one of the SDK's
 * own, which the relay never sends: `closed`, `replaced`, `unauthorized`,
 * `env_not_allowed`, `too_many_connections`, `queue_overflow`,
 * `invalid_argument`, `too_large`, `token_error`, `bad_frame`, `handler_error`,
 * `transport_error`.
 */
export class RelayError extends Error {
  /** Machine-readable error code. */
  readonly code: string;
  /** The relay's error reference (also in the relay's log line), when the relay sent one. */
  readonly ref?: string;
  /** The route that rejected the message, when the relay named one. */
  readonly route?: string;
  /** The client message id this error is about, if any. */
  readonly id?: string;
  /** The WebSocket close code, for errors caused by a close. */
  readonly closeCode?: number;
  /** The original cause (a thrown value, a transport error), if any. */
  cause?: unknown;

  constructor(
    code: string,
    message: string,
    extra: { ref?: string; route?: string; id?: string; closeCode?: number; cause?: unknown } = {},
  ) {
    super(message);
    this.name = 'RelayError';
    this.code = code;
    if (extra.ref !== undefined) this.ref = extra.ref;
    if (extra.route !== undefined) this.route = extra.route;
    if (extra.id !== undefined) this.id = extra.id;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
    if (extra.cause !== undefined) this.cause = extra.cause;
  }
}
