package dpsservice

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseError(t *testing.T) {
	for _, tc := range []struct {
		status   int
		body     string
		code     int
		msg, tid string
	}{
		{401, `{"errorCode":401002,"trackingId":"f40da7ba-8c91-4796-8fc3-89e1dfbdbe05","message":"Unauthorized","timestampUtc":"2019-03-15T19:43:02.7904455Z"}`, 401002, "Unauthorized", "f40da7ba-8c91-4796-8fc3-89e1dfbdbe05"},
		{400, `{"errorCode":"400004","message":"Endorsement key is invalid, or does not match the Enrollment."}`, 400004, "Endorsement key is invalid, or does not match the Enrollment.", ""},
		{503, `Service Unavailable`, 0, "Service Unavailable", ""},
		{500, ``, 0, "", ""},
		{404, `{"errorCode":"x"}`, 0, "", ""},
	} {
		e := ParseError(tc.status, []byte(tc.body))
		if e.HTTPStatus != tc.status || e.Code != tc.code || e.Message != tc.msg || e.TrackingID != tc.tid {
			t.Errorf("ParseError(%d, %q) = %+v", tc.status, tc.body, e)
		}
		if !strings.Contains(e.Error(), "HTTP "+itoa(tc.status)) {
			t.Errorf("Error() = %q lacks the status", e.Error())
		}
	}
	long := ParseError(500, []byte(strings.Repeat("é", 1000)))
	if len(long.Message) > 520 || !utf8.ValidString(long.Message) {
		t.Errorf("long body gave a %d-byte message (valid UTF-8: %v)", len(long.Message), utf8.ValidString(long.Message))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
func FuzzParseError(f *testing.F) {
	f.Add(401, `{"errorCode":401002,"trackingId":"t","message":"m","timestampUtc":"2019-03-15T19:43:02.7904455Z"}`)
	f.Add(429, `{"errorCode":"429001"}`)
	f.Add(500, "\xff\xfe")
	f.Fuzz(func(t *testing.T, status int, body string) {
		e := ParseError(status, []byte(body))
		if e.HTTPStatus != status {
			t.Fatalf("HTTPStatus %d, want %d", e.HTTPStatus, status)
		}
		if !utf8.ValidString(e.Error()) {
			t.Fatalf("Error() is not valid UTF-8: %q", e.Error())
		}
	})
}
