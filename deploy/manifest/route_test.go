package manifest

import (
	"strings"
	"testing"
)

var routeCases = []struct {
	in      string
	want    Route
	wantErr string // a part of the error; empty when the route is good
}{
	{in: "FROM /messages/modules/relay/outputs/* INTO $upstream",
		want: Route{Source: "/messages/modules/relay/outputs/*", Sink: "$upstream"}},
	{in: `FROM /messages/modules/plc/outputs/temperature INTO BrokeredEndpoint("/modules/relay/inputs/readings")`,
		want: Route{Source: "/messages/modules/plc/outputs/temperature", Sink: `BrokeredEndpoint("/modules/relay/inputs/readings")`}},
	{in: "  from /* where $connectionModuleId = 'a INTO b' AND (temp > 3)\n\tinto   $upstream  ",
		want: Route{Source: "/*", Condition: "$connectionModuleId = 'a INTO b' AND (temp > 3)", Sink: "$upstream"}},
	{in: "FROM /twinChangeNotifications INTO $upstream", want: Route{Source: "/twinChangeNotifications", Sink: "$upstream"}},
	{in: "FROM /messages/* INTO $upstream", want: Route{Source: "/messages/*", Sink: "$upstream"}},
	{in: "FROM /messages/modules/* INTO $upstream", want: Route{Source: "/messages/modules/*", Sink: "$upstream"}},
	{in: "FROM /messages/modules/m_1-2/* INTO $upstream", want: Route{Source: "/messages/modules/m_1-2/*", Sink: "$upstream"}},

	{in: "", wantErr: "want FROM <source> [WHERE <condition>] INTO <sink>"},
	{in: "FROM", wantErr: "want FROM"},
	{in: "FROM /*", wantErr: "want FROM"},
	{in: "FROM /* INTO", wantErr: "want FROM"},
	{in: "FROM /* WHERE INTO $upstream", wantErr: "want FROM"},
	{in: "FROM /* WHERE a = 1", wantErr: "want FROM"},
	{in: "FROMX /* INTO $upstream", wantErr: "want FROM"},
	{in: "FROM /* TO $upstream", wantErr: "want FROM"},
	{in: "FROM /messages INTO $upstream", wantErr: `source "/messages"`},
	{in: "FROM /messages/modules/a.b/* INTO $upstream", wantErr: `source "/messages/modules/a.b/*"`},
	{in: "FROM /messages/modules/m/inputs/* INTO $upstream", wantErr: "source"},
	{in: "FROM /messages/modules/m/outputs/a/b INTO $upstream", wantErr: "source"},
	{in: "FROM /messages/modules/m/outputs/ INTO $upstream", wantErr: "source"},
	{in: "FROM /* INTO $Upstream", wantErr: `sink "$Upstream"`},
	{in: "FROM /* INTO $upstream now", wantErr: `sink "$upstream now"`},
	{in: `FROM /* INTO BrokeredEndpoint("/modules/r/inputs/a/b")`, wantErr: "sink"},
	{in: `FROM /* INTO BrokeredEndpoint("/modules/r/inputs/")`, wantErr: "sink"},
	{in: `FROM /* INTO BrokeredEndpoint("modules/r/inputs/i")`, wantErr: "sink"},
	{in: `FROM /* INTO BrokeredEndpoint('/modules/r/inputs/i')`, wantErr: "sink"},
	{in: `FROM /* INTO BrokeredEndpoint("/modules/r/inputs/i"`, wantErr: "sink"},
	{in: "FROM /* WHERE (a = 1 INTO $upstream", wantErr: "unbalanced parentheses"},
	{in: "FROM /* WHERE a = 1) INTO $upstream", wantErr: "unbalanced parentheses"},
	{in: "FROM /* WHERE a = 'x INTO $upstream", wantErr: "unterminated string"},
}

func TestParseRoute(t *testing.T) {
	for _, tc := range routeCases {
		got, err := ParseRoute(tc.in)
		switch {
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("ParseRoute(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseRoute(%q) = %+v, %v, want an error with %q", tc.in, got, err, tc.wantErr)
		}
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, tc := range routeCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRoute(s)
		if err != nil {
			return
		}
		// A parsed route prints back to itself.
		again := "FROM " + r.Source + " INTO " + r.Sink
		if r.Condition != "" {
			again = "FROM " + r.Source + " WHERE " + r.Condition + " INTO " + r.Sink
		}
		r2, err := ParseRoute(again)
		if err != nil || r2 != r {
			t.Errorf("ParseRoute(%q) = %+v, but ParseRoute(%q) = %+v, %v", s, r, again, r2, err)
		}
	})
}
