// Command baseline is relay-bench's reference point: about the least a
// WebSocket relay can do. It pairs connections by the token and env of their
// query and writes every text frame it receives, unchanged, to the token's
// other envs. One reader goroutine per connection; writes to a connection are
// serialised by its mutex. No limits, no heartbeats, no protocol.
//
// It prints its listen address on stdout so that relay-bench can find it.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
)

type peer struct {
	mu   sync.Mutex
	conn *websocket.Conn
}

func (p *peer) send(msg []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
		_ = p.conn.Close() // its reader sees the error and leaves
	}
}

// hub maps token → env → connection.
type hub struct {
	mu    sync.Mutex
	rooms map[string]map[string]*peer
}

// join registers p and returns the connection it replaces, if any.
func (h *hub) join(token, env string, p *peer) *peer {
	h.mu.Lock()
	defer h.mu.Unlock()
	room := h.rooms[token]
	if room == nil {
		room = make(map[string]*peer, 2)
		h.rooms[token] = room
	}
	old := room[env]
	room[env] = p
	return old
}

func (h *hub) leave(token, env string, p *peer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.rooms[token]; room != nil && room[env] == p {
		delete(room, env)
		if len(room) == 0 {
			delete(h.rooms, token)
		}
	}
}

// others appends the token's connections of envs other than env to dst.
func (h *hub) others(token, env string, dst []*peer) []*peer {
	h.mu.Lock()
	defer h.mu.Unlock()
	for e, p := range h.rooms[token] {
		if e != env {
			dst = append(dst, p)
		}
	}
	return dst
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().String())

	h := &hub{rooms: make(map[string]map[string]*peer)}
	upgrader := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, env := r.URL.Query().Get("token"), r.URL.Query().Get("env")
		if token == "" || env == "" {
			http.Error(w, "token and env are required", http.StatusBadRequest)
			return
		}
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade has answered the request
		}
		p := &peer{conn: conn}
		if old := h.join(token, env, p); old != nil {
			_ = old.conn.Close()
		}
		defer func() {
			h.leave(token, env, p)
			_ = conn.Close()
		}()
		var peers []*peer
		for {
			typ, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if typ != websocket.TextMessage {
				continue
			}
			peers = h.others(token, env, peers[:0])
			for _, q := range peers {
				q.send(msg)
			}
		}
	})
	log.Fatal(http.Serve(ln, handler))
}
