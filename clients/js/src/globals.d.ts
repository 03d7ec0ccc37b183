// Just the host globals the SDK touches. The SDK runs in browsers, mini
// programs (WeChat, uni-app, Taro) and Node, so it must not depend on the DOM
// or Node type libraries, and none of these names appear in the public types.
declare function setTimeout(handler: () => void, ms?: number): unknown;
declare function clearTimeout(handle: unknown): void;
declare function setInterval(handler: () => void, ms?: number): unknown;
declare function clearInterval(handle: unknown): void;
declare const wx: any;
declare const WebSocket: any;
declare const TextDecoder: any;
