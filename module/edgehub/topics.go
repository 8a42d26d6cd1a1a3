package edgehub

import (
	"errors"
	"strconv"
	"strings"
)

// Topic prefixes of what edgeHub sends a module (docs/edge-protocol.md#twin-and-methods-over-mqtt).
const (
	methodPrefix       = "$iothub/methods/POST/"
	twinResponsePrefix = "$iothub/twin/res/"
)

// parseMethodTopic reads $iothub/methods/POST/{name}/?$rid={rid}: the
// method's name is the segment after POST, the request ID the query's
// $rid; both must be present.
func parseMethodTopic(topic string) (name, rid string, err error) {
	rest, ok := strings.CutPrefix(topic, methodPrefix)
	if !ok {
		return "", "", errors.New("not a method request topic")
	}
	name, query, _ := strings.Cut(rest, "/")
	rid = queryValue(query, "$rid")
	if name == "" || rid == "" {
		return "", "", errors.New("method request without a name or $rid")
	}
	return name, rid, nil
}

// methodResponseTopic is where the answer to request rid goes.
func methodResponseTopic(status int, rid string) string {
	return "$iothub/methods/res/" + strconv.Itoa(status) + "/?$rid=" + escape(rid)
}

// parseTwinResponseTopic reads $iothub/twin/res/{status}/?$rid={rid}[&$version={v}]:
// the status is the segment after res, a positive number.
func parseTwinResponseTopic(topic string) (status int, rid string, err error) {
	rest, ok := strings.CutPrefix(topic, twinResponsePrefix)
	if !ok {
		return 0, "", errors.New("not a twin response topic")
	}
	code, query, _ := strings.Cut(rest, "/")
	status, err = strconv.Atoi(code)
	if err != nil || status <= 0 {
		return 0, "", errors.New("twin response without a status")
	}
	return status, queryValue(query, "$rid"), nil
}
