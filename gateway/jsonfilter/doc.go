// Package jsonfilter carries out the gateway's data-minimising obligations on a JSON response body
// as it streams from provider to consumer: it drops members, redacts values to null, replaces values
// by pseudonymous tokens, and keeps only the first rows of an array, without holding the body.
//
// Rules name values by Path: object keys separated by '.', with "[]" for every element of an array,
// as in "ssn", "patient.address", "records[].name", "[].id" (elements of a top-level array) and
// "a[][].b" (arrays in an array). A backslash makes the next character part of a key, so the key
// "a.b" is written `a\.b`. Keys match after their JSON escapes are decoded: the document's "a\u0062"
// is the path's "ab". A path that reaches nothing in a document does nothing. ParseRules reads the
// rules from a policy decision's obligations.
//
// A Filter is an io.WriteCloser in front of the consumer's writer. Its memory is bounded by Limits
// (nesting depth, one key, one value being pseudonymised) and a 32 KiB output buffer, whatever the
// size of the body: values no rule holds back, strings of any length included, flow through piece
// by piece, and every Write writes on what it completed before it returns. Bytes no rule touches
// pass as they are, escapes and whitespace included, so without rules the output is the input.
//
// It fails closed. The input must be exactly one JSON text (RFC 8259, UTF-8, whitespace around it
// allowed); anything else, a document over a limit, or a value a rule cannot be carried out on (an
// object or array to pseudonymise, rows that are not an array) stops the Filter with an *Error that
// gives the input offset. Nothing is written after it, and nothing written before it holds a value a
// rule targets; the caller must break the body off so the consumer cannot take what it got for a
// whole document.
package jsonfilter
