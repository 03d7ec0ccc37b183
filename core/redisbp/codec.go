package redisbp

import (
	"encoding/binary"
	"encoding/json"
	"errors"

	"github.com/pairrelay/relay/core"
)

// A message travels through Redis (history entries and pub/sub payloads)
// in a small binary form that keeps every byte of Data as it is (JSON
// encoders would compact and re-escape it). Seq and Token are not in it:
// the seq is assigned inside Redis and prefixed by the scripts, the token
// is known from the key or channel.
//
//	byte    version (1)
//	byte    flags: 1 data present, 2 to present (non-nil), 4 seed text, 8 seed resolved
//	varint  ts
//	string  from, id            (uvarint length + bytes)
//	string  type, data          (only without seed text; data only with flag 1)
//	uvarint len(to), strings    (only with flag 2)
//	string  seed text           (only with flag 4)
const codecVersion = 1

const (
	flagData = 1 << iota
	flagTo
	flagSeed
	flagResolved
)

var errCorrupt = errors.New("redisbp: corrupt message encoding")

// encodeMessage appends m's encoding to dst.
func encodeMessage(dst []byte, m *core.Message) []byte {
	var flags byte
	seed := m.SeedText()
	if seed != nil {
		flags |= flagSeed
		// A seed message a route parsed is parsed again on arrival, so that
		// Type and Data are there as they were here.
		if m.Type != "" || m.Data != nil {
			flags |= flagResolved
		}
	} else if m.Data != nil {
		flags |= flagData
	}
	if m.To != nil {
		flags |= flagTo
	}
	dst = append(dst, codecVersion, flags)
	dst = binary.AppendVarint(dst, m.TS)
	dst = appendString(dst, m.From)
	dst = appendString(dst, m.ID)
	if seed == nil {
		dst = appendString(dst, m.Type)
		if m.Data != nil {
			dst = appendBytes(dst, m.Data)
		}
	}
	if m.To != nil {
		dst = binary.AppendUvarint(dst, uint64(len(m.To)))
		for _, to := range m.To {
			dst = appendString(dst, to)
		}
	}
	if seed != nil {
		dst = appendBytes(dst, seed)
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst []byte, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// decodeMessage reads a message encodeMessage wrote. The message owns
// copies of everything it holds.
func decodeMessage(b []byte) (*core.Message, error) {
	if len(b) < 2 || b[0] != codecVersion {
		return nil, errCorrupt
	}
	flags := b[1]
	d := decoder{b: b[2:]}
	ts := d.varint()
	from := d.string()
	id := d.string()
	var typ string
	var data json.RawMessage
	if flags&flagSeed == 0 {
		typ = d.string()
		if flags&flagData != 0 {
			data = json.RawMessage(d.bytes())
		}
	}
	var to []string
	if flags&flagTo != 0 {
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			return nil, errCorrupt
		}
		to = make([]string, 0, n)
		for i := uint64(0); i < n; i++ {
			to = append(to, d.string())
		}
	}
	var m *core.Message
	if flags&flagSeed != 0 {
		m = core.NewSeedMessageFromText(d.bytes())
	} else {
		m = &core.Message{Type: typ, Data: data}
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errCorrupt
	}
	if flags&flagResolved != 0 {
		m.Resolve()
	}
	m.To, m.ID, m.From, m.TS = to, id, from, ts
	return m, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err, d.b = errCorrupt, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err, d.b = errCorrupt, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err, d.b = errCorrupt, nil
		return nil
	}
	out := make([]byte, n)
	copy(out, d.b[:n])
	d.b = d.b[n:]
	return out
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err, d.b = errCorrupt, nil
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
