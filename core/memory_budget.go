package core

import (
	"slices"
	"time"
	"unsafe"
)

// The history counts what its messages really hold, not their payload
// alone: a payload of 60 KB takes a 64 KiB allocation, a seed message
// parsed by a route holds its text and its data, and every message has a
// struct, a slot in its token's entries and perhaps an id in the index.
// The garbage collector's own headroom is not counted here; the Go
// runtime's soft memory limit (limits.memory) bounds it.

var (
	messageStructSize = int64(unsafe.Sizeof(Message{}))
	entrySlotSize     = int64(unsafe.Sizeof(historyEntry{}))
	topicStructSize   = int64(unsafe.Sizeof(memoryTopic{}))
)

// mapEntryOverhead is what one more key costs a Go map beyond the key's
// own bytes: its slot (key header and value) and the table's spare room.
const mapEntryOverhead = 64

// allocSize is the size of the block the Go allocator hands out for n
// bytes: small sizes go to size classes at most 1/8 apart (rounded up
// here to the next step of that spacing), large ones to whole 8 KiB pages.
func allocSize(n int64) int64 {
	switch {
	case n <= 0:
		return 0
	case n <= 16:
		return 16
	case n > 32<<10:
		return (n + 8191) &^ 8191
	}
	step := int64(16)
	for step*16 < n {
		step *= 2
	}
	return (n + step - 1) / step * step
}

// sliceBlock is the allocation behind a byte slice, 0 when empty.
func sliceBlock(b []byte) int64 { return allocSize(int64(cap(b))) }

// within reports whether b's bytes lie inside outer's backing array.
func within(b, outer []byte) bool {
	if cap(b) == 0 || cap(outer) == 0 {
		return false
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(outer)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= start && p < start+uintptr(cap(outer))
}

// retainedSize is the memory the history holds for m: its struct, its
// slot in the entries (counted twice: a slice grows by doubling and its
// dead prefix is reclaimed lazily), and the blocks of its bytes. From and
// Token are shared with the sender's session and not counted.
func retainedSize(m *Message) int64 {
	n := allocSize(messageStructSize) + 2*entrySlotSize
	n += sliceBlock(m.seed)
	if !within(m.Data, m.seed) {
		n += sliceBlock(m.Data)
	}
	if m.seedData != nil && !within(m.seedData, m.seed) && !within(m.seedData, m.Data) {
		n += sliceBlock(m.seedData)
	}
	n += allocSize(int64(len(m.Type))) + allocSize(int64(len(m.ID)))
	if m.To != nil {
		n += allocSize(int64(cap(m.To)) * int64(unsafe.Sizeof("")))
		for _, env := range m.To {
			n += allocSize(int64(len(env)))
		}
	}
	return n
}

// idSize is what a client id in the dedupe index costs.
func idSize(idKey string) int64 { return allocSize(int64(len(idKey))) + mapEntryOverhead }

// topicSize is what a token's topic costs besides its messages.
func topicSize(token string) int64 {
	return allocSize(topicStructSize) + allocSize(int64(len(token))) + mapEntryOverhead
}

// reclaimBytes brings the history down to target bytes: first the whole
// history of idle tokens (no session of this instance holds or hears
// them), least recently used first; then, if that is not enough, the
// oldest messages of the busy ones. A dropped message moves its topic's
// evicted mark, so a resume from before it answers resumed:false. Unless
// wait is set, it returns at once when another reclaim is running.
func (b *MemoryBackplane) reclaimBytes(target int64, wait bool) {
	if wait {
		b.reclaim.Lock()
	} else if !b.reclaim.TryLock() {
		return
	}
	defer b.reclaim.Unlock()
	if b.bytes.Load() <= target {
		return // another publisher did it while this one waited
	}
	type candidate struct {
		t      *memoryTopic
		used   time.Time
		oldest time.Time
	}
	var idle, busy []candidate
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for _, t := range sh.topics {
			t.mu.Lock()
			if len(t.entries) > t.head {
				c := candidate{t: t, used: t.used, oldest: t.entries[t.head].at}
				if len(t.subs) == 0 && len(t.owners) == 0 {
					idle = append(idle, c)
				} else {
					busy = append(busy, c)
				}
			}
			t.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(idle, func(a, c candidate) int { return a.used.Compare(c.used) })
	for _, c := range idle {
		if b.bytes.Load() <= target {
			return
		}
		c.t.mu.Lock()
		for len(c.t.entries) > c.t.head {
			b.dropOldest(c.t)
			b.trimmed.Add(1)
		}
		c.t.mu.Unlock()
	}
	if len(busy) == 0 {
		return
	}
	// The oldest messages of busy tokens go next: everything before a
	// cutoff that moves forward until enough is freed. Each token keeps
	// its newest message (a receiver that is offline right now may resume
	// it) until the last round, which keeps the bound above all.
	oldest := slices.MinFunc(busy, func(a, c candidate) int { return a.oldest.Compare(c.oldest) }).oldest
	now := b.now()
	for _, round := range []struct {
		share float64
		keep  int
	}{{0.25, 1}, {0.5, 1}, {0.75, 1}, {1, 1}, {1, 0}} {
		if b.bytes.Load() <= target {
			return
		}
		keep := round.keep
		cutoff := oldest.Add(time.Duration(float64(now.Sub(oldest)) * round.share))
		for _, c := range busy {
			if b.bytes.Load() <= target {
				return
			}
			c.t.mu.Lock()
			for len(c.t.entries)-c.t.head > keep && !c.t.entries[c.t.head].at.After(cutoff) && b.bytes.Load() > target {
				b.dropOldest(c.t)
				b.trimmed.Add(1)
			}
			c.t.mu.Unlock()
		}
	}
}

// TrimHistory drops history, idle tokens first, until it holds at most
// fraction of what it holds now; relay calls it under memory pressure. It
// returns the bytes the history holds afterwards.
func (b *MemoryBackplane) TrimHistory(fraction float64) int64 {
	b.reclaimBytes(int64(float64(b.bytes.Load())*fraction), true)
	return b.bytes.Load()
}
