// Types of @pairrelay/plugin-sdk (index.js documents each).

/** A refusal on purpose: the sender gets relay.error with code and message. */
export class Rejection extends Error {
  constructor(code: string, message?: string);
  code: string;
}

/** Return or throw it to refuse a message (or, in authenticate, a connection). */
export function reject(code: string, message?: string): Rejection;

export interface MessageFields<T = any> {
  type: string;
  data?: T;
  to?: string[] | null;
  id?: string;
  from?: string;
  ts?: number;
  claims?: Record<string, unknown> | null;
}

export class Message<T = any> {
  constructor(fields?: Partial<MessageFields<T>>);
  type: string;
  /** The JSON value; undefined when the message has none. */
  data: T;
  /** Envs to deliver to; null: every other env of the token. */
  to: string[] | null;
  id: string;
  from: string;
  ts: number;
  claims: Record<string, unknown> | null;
  /** The data's JSON text as relay sent it, or null once data was read or set. */
  readonly rawData: Buffer | null;
}

export interface HandleContext {
  /** Milliseconds the route's timeout leaves this call (0: none). */
  timeoutMs: number;
  /** Aborted when relay gives up on the call. */
  signal: AbortSignal;
}

export type HandleResult = Message | MessageFields | Array<Message | MessageFields> | null | Rejection;

export interface AuthenticateRequest {
  credential: string;
  env: string;
  ip: string;
  origin: string;
  headers: Record<string, string>;
  timeout_ms: string;
}

export interface Identity {
  /** The pairing key: connections with the same key share a room. */
  key: string;
  /** Envs the credential may use; absent: any. */
  envs?: string[];
  /** Unix ms when the credential expires; absent or 0: never. */
  expiresAt?: number;
  claims?: Record<string, unknown>;
}

export interface ConfigField {
  name: string;
  type?: string;
  doc?: string;
  default?: string;
  required?: boolean;
}

export interface Plugin {
  name?: string;
  summary?: string;
  fields?: ConfigField[];
  configure?(config: Record<string, unknown>): void | Promise<void>;
  handle(msg: Message, ctx: HandleContext): HandleResult | Promise<HandleResult>;
  authenticate?(req: AuthenticateRequest): Identity | Rejection | Promise<Identity | Rejection>;
}

/** Runs the plugin under relay (never returns control to relay's side: the process serves until stopped). */
export function serve(plugin: Plugin): unknown;

export type CallResult =
  | { messages: Message[] }
  | { drop: Record<string, never> }
  | { reject: { code: string; message: string } }
  | { error: { message: string } };

/** Runs plugin.handle on one message as relay's call does, in-process: for tests. */
export function call(plugin: Plugin, msg: Message | MessageFields, ctx?: Partial<HandleContext>): Promise<CallResult>;

/** Checks config against defaults (every key with its default value): unknown keys and wrong types throw. */
export function decodeConfig<T extends Record<string, unknown>>(config: Record<string, unknown> | undefined, defaults: T): T;
