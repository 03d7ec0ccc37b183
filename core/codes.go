package core

// Close codes sent to clients. 4000–4499: reconnect with backoff (except
// 4012: at once); 4500–4999: terminal, the client must not reconnect on its own.
const (
	CloseNormal         = 1000
	CloseTooLarge       = 1009
	ClosePolicy         = 1008 // a message split into too many fragments, or not finished in time
	CloseRestarting     = 1012 // relay stopping or restarting: reconnect, maybe to another instance
	CloseSlowConsumer   = 4008
	CloseMaxAge         = 4012 // limits.max_connection_age reached: reconnect at once (see connage.go)
	CloseTooMany        = 4029
	CloseUnauthorized   = 4501
	CloseReplaced       = 4502
	CloseEnvNotAllowed  = 4503
	CloseTokenFull      = 4504
	CloseDuplicateEnv   = 4505 // on_duplicate: reject, and this token+env is already connected
	closeInvalidPayload = 1007
)

// closeReasons are the human-readable reasons sent with each close code.
var closeReasons = map[int]string{
	CloseNormal:         "bye",
	CloseTooLarge:       "frame too large",
	ClosePolicy:         "policy violation",
	CloseRestarting:     "relay restarting",
	CloseSlowConsumer:   "slow consumer",
	CloseMaxAge:         "connection age reached: reconnect now",
	CloseTooMany:        "too many messages",
	CloseUnauthorized:   "unauthorized",
	CloseReplaced:       "replaced by a newer connection",
	CloseEnvNotAllowed:  "env not allowed",
	CloseTokenFull:      "too many connections for this token",
	CloseDuplicateEnv:   "env already connected for this token",
	closeInvalidPayload: "invalid UTF-8",
}

// Error codes carried by relay.error frames.
const (
	ErrInvalidJSON    = "invalid_json"
	ErrInvalidMessage = "invalid_message"
	ErrReservedType   = "reserved_type"
	ErrBinary         = "binary_unsupported"
	ErrInvalidUTF8    = "invalid_utf8"
	ErrRateLimited    = "rate_limited"
	ErrRejected       = "rejected"
	ErrUnavailable    = "unavailable"   // certainly not accepted, and never will be
	ErrUnconfirmed    = "unconfirmed"   // may have been accepted: resend with the same id (deduplicated)
	ErrUnauthorized   = "unauthorized"  // a credential refused (first frame, relay.refresh)
	ErrTokenExpired   = "token_expired" // the credential expires soon: send relay.refresh
	ErrInternal       = "internal"
)
