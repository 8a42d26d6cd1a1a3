package deadletter

import (
	"encoding/base64"
	"encoding/json"
	"errors"
)

// MaxAnswer bounds a direct method's answer: IoT Hub takes at most 128 KB
// (docs/edge-protocol.md), and a little is left for the envelope.
const MaxAnswer = 120_000

// Direct method names, as edge-relay registers them.
const (
	MethodList  = "deadLetters.list"
	MethodGet   = "deadLetters.get"
	MethodPurge = "deadLetters.purge"
)

// clip bounds strings in answers, so that one long topic or property
// cannot fill a page.
const clip = 256

// Method answers the dead-letter direct methods; ok is false for a name
// that is not one of them. Every answer fits in MaxAnswer: list and get
// page, with "next" naming where the next page starts.
//
//	deadLetters.list  {"after":"<id>","limit":50}         → {"letters":[…],"next":"<id>"}
//	deadLetters.get   {"id":"<id>","offset":0}            → {"letter":{…},"offset":0,"body":"<base64>","next":N}
//	deadLetters.purge {"ids":["<id>",…]} or {"all":true}  → {"purged":N}
func (s *Store) Method(name string, payload []byte) (status int, answer []byte, ok bool) {
	switch name {
	case MethodList:
		status, answer = s.methodList(payload)
	case MethodGet:
		status, answer = s.methodGet(payload)
	case MethodPurge:
		status, answer = s.methodPurge(payload)
	default:
		return 0, nil, false
	}
	return status, answer, true
}

func fail(status int, msg string) (int, []byte) {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return status, b
}

// decode reads a request; an empty payload (or JSON null) is {}.
func decode(payload []byte, v any) error {
	if len(payload) == 0 || string(payload) == "null" {
		return nil
	}
	return json.Unmarshal(payload, v)
}

// summary is a letter as listed: its strings clipped, no properties.
func summary(l *Letter) *Letter {
	c := *l
	c.Topic, c.Detail, c.MessageID, c.Source = cut(c.Topic), cut(c.Detail), cut(c.MessageID), cut(c.Source)
	c.Output, c.ContentType, c.ContentEncoding = cut(c.Output), cut(c.ContentType), cut(c.ContentEncoding)
	c.Properties, c.Body = nil, nil
	return &c
}

func cut(s string) string {
	if len(s) > clip {
		return s[:clip] + "…"
	}
	return s
}

func (s *Store) methodList(payload []byte) (int, []byte) {
	var req struct {
		After string `json:"after"`
		Limit int    `json:"limit"`
	}
	if err := decode(payload, &req); err != nil || req.Limit < 0 {
		return fail(400, `want {"after":"<id>","limit":1..100}`)
	}
	if req.Limit == 0 || req.Limit > 100 {
		req.Limit = min(max(req.Limit, 50), 100)
	}
	letters, more, err := s.List(req.After, req.Limit)
	if err != nil {
		return fail(400, err.Error())
	}
	type page struct {
		Letters []*Letter `json:"letters"`
		Next    string    `json:"next,omitempty"`
	}
	p := page{Letters: make([]*Letter, len(letters))}
	for i, l := range letters {
		p.Letters[i] = summary(l)
	}
	for {
		if more || len(p.Letters) < len(letters) {
			if len(p.Letters) > 0 {
				p.Next = p.Letters[len(p.Letters)-1].ID
			} else {
				p.Next = req.After
			}
		}
		b, _ := json.Marshal(p)
		if len(b) <= MaxAnswer || len(p.Letters) <= 1 {
			return 200, b
		}
		p.Letters = p.Letters[:len(p.Letters)/2]
	}
}

func (s *Store) methodGet(payload []byte) (int, []byte) {
	var req struct {
		ID     string `json:"id"`
		Offset int    `json:"offset"`
	}
	if err := decode(payload, &req); err != nil || req.ID == "" || req.Offset < 0 {
		return fail(400, `want {"id":"<id>","offset":0}`)
	}
	l, err := s.Get(req.ID)
	if errors.Is(err, ErrNotFound) {
		return fail(404, err.Error())
	}
	if err != nil {
		return fail(500, err.Error())
	}
	body := l.Body
	if req.Offset > len(body) {
		return fail(400, "offset past the end of the body")
	}
	type answer struct {
		Letter *Letter `json:"letter"`
		Offset int     `json:"offset"`
		Body   string  `json:"body"` // base64 of body[offset:next]
		Next   int     `json:"next,omitempty"`
	}
	a := answer{Letter: l, Offset: req.Offset}
	head, _ := json.Marshal(a)
	if len(head) > MaxAnswer/2 {
		// Properties or a topic too long to come whole: clipped.
		a.Letter = summary(l)
		a.Letter.Properties = map[string]string{}
		for k, v := range l.Properties {
			a.Letter.Properties[cut(k)] = cut(v)
			if len(a.Letter.Properties) == 64 {
				break
			}
		}
		head, _ = json.Marshal(a)
	}
	room := (MaxAnswer - len(head) - 32) / 4 * 3 // base64: 4 characters per 3 bytes
	end := min(len(body), req.Offset+max(room, 0))
	a.Body = base64.StdEncoding.EncodeToString(body[req.Offset:end])
	if end < len(body) {
		a.Next = end
	}
	b, _ := json.Marshal(a)
	return 200, b
}

func (s *Store) methodPurge(payload []byte) (int, []byte) {
	var req struct {
		IDs []string `json:"ids"`
		All bool     `json:"all"`
	}
	if err := decode(payload, &req); err != nil || len(req.IDs) == 0 && !req.All {
		return fail(400, `want {"ids":["<id>",…]} or {"all":true}`)
	}
	n, err := s.Purge(req.IDs, req.All)
	if err != nil {
		return fail(500, err.Error())
	}
	b, _ := json.Marshal(map[string]int{"purged": n})
	return 200, b
}
