/**
 * @pairrelay/client: the relay client SDK for browsers and mini programs.
 * Speaks relay wire protocol v1 (typed JSON envelopes, acks, resume by seq).
 */
export { createClient, base64url } from './client.js';
export type {
  RelayClient,
  AnyMessages,
  DataOf,
  AppLifecycle,
  ClientOptions,
  CredentialTransport,
  TokenSource,
  HelloData,
  HelloLimits,
  RelayMessage,
  SendOptions,
  SendResult,
  State,
  StateDetail,
} from './client.js';
export { RelayError, CloseCode, isTerminalCloseCode } from './errors.js';
export { backoffDelay } from './backoff.js';
export {
  adaptSocketTask,
  defaultSocketFactory,
  socketTaskFactory,
  webSocketFactory,
  wxContainerFactory,
  wxSocketFactory,
} from './transports.js';
export type {
  ContainerTarget,
  RelaySocket,
  SocketEvents,
  SocketFactory,
  SocketOptions,
  SocketTaskLike,
  WebSocketLikeConstructor,
  WxLike,
} from './transports.js';
