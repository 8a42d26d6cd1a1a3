package dpsservice

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/edgetpm/edgetpm/internal/azrest"
)

// Modes of a bulk enrollment operation (BulkEnrollmentOperation.mode in
// Azure's REST API spec).
const (
	BulkCreate            = "create"
	BulkUpdate            = "update"
	BulkUpdateIfMatchETag = "updateIfMatchETag"
	BulkDelete            = "delete"
)

// MaxBulk is the most enrollments one bulk operation may carry: "Bulk
// device enrollment operation with maximum of 10 enrollments" (Azure's
// REST API spec, specification/deviceprovisioningservices/data-plane/
// DeviceProvisioningServices/stable/2021-10-01/service.json,
// IndividualEnrollment_RunBulkOperation).
const MaxBulk = 10

// BulkOperation is the body of POST /enrollments.
type BulkOperation struct {
	Enrollments []Enrollment `json:"enrollments"`
	Mode        string       `json:"mode"`
}

// BulkResult is DPS's answer to a bulk operation
// (BulkEnrollmentOperationResult): IsSuccessful is false when any
// enrollment failed, and Errors names each.
type BulkResult struct {
	IsSuccessful bool        `json:"isSuccessful"`
	Errors       []BulkError `json:"errors"`
}

// BulkError is one enrollment's failure in a bulk operation
// (BulkEnrollmentOperationError).
type BulkError struct {
	RegistrationID string `json:"registrationId"`
	ErrorCode      int    `json:"errorCode"`
	ErrorStatus    string `json:"errorStatus"`
}

// Bulk runs one bulk operation on up to MaxBulk enrollments. A per-enrollment
// failure is in the result, not the error.
func (c *Client) Bulk(ctx context.Context, mode string, es []Enrollment) (*BulkResult, error) {
	body, err := json.Marshal(BulkOperation{Enrollments: es, Mode: mode})
	if err != nil {
		return nil, fmt.Errorf("bulk %s: %w", mode, err)
	}
	var out BulkResult
	if _, err := c.call(ctx, azrest.Request{Method: http.MethodPost, URL: "/enrollments", Body: body}, &out); err != nil {
		return nil, fmt.Errorf("bulk %s of %d enrollments: %w", mode, len(es), err)
	}
	return &out, nil
}

// Headers of a query's paging.
const (
	headerMaxItemCount = "x-ms-max-item-count"
	headerContinuation = "x-ms-continuation"
)

// QueryPage returns one page of the enrollments that match query ("SELECT *
// FROM enrollments" for all), at most pageSize of them (0: DPS's default),
// from the page continuation names ("" for the first), and the
// continuation of the next page, "" after the last.
func (c *Client) QueryPage(ctx context.Context, query string, pageSize int, continuation string) ([]Enrollment, string, error) {
	body, err := json.Marshal(struct {
		Query string `json:"query"`
	}{query})
	if err != nil {
		return nil, "", err
	}
	h := http.Header{}
	if pageSize > 0 {
		h.Set(headerMaxItemCount, strconv.Itoa(pageSize))
	}
	if continuation != "" {
		h.Set(headerContinuation, continuation)
	}
	var out []Enrollment
	resp, err := c.call(ctx, azrest.Request{Method: http.MethodPost, URL: "/enrollments/query", Body: body, Header: h}, &out)
	if err != nil {
		return nil, "", fmt.Errorf("query enrollments: %w", err)
	}
	return out, resp.Header.Get(headerContinuation), nil
}
