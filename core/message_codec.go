package core

// What a backplane needs to carry a seed-wire message to another process
// unchanged: the text the client sent, and a way to make it a message again.

// SeedText returns the text a seed-wire client sent when m still is exactly
// that text (no handler changed its type or data), nil otherwise. A message
// with seed text is fully described by it plus To, ID, From, Seq, TS and
// Token; one without is described by Type and Data.
func (m *Message) SeedText() []byte {
	if m.seed != nil && m.seedIntact() {
		return m.seed
	}
	return nil
}

// NewSeedMessageFromText rebuilds a message from seed text SeedText
// returned. Its Type and Data are derived from the text when needed (call
// Resolve to derive them at once); the caller sets the other fields.
func NewSeedMessageFromText(text []byte) *Message {
	return newSeedMessage(text)
}
