// Package wire encodes and decodes the frames of the ztgate adapter protocol (see ../PROTOCOL.md).
//
// Decoding is strict and bounded: a frame whose type is unknown, whose length exceeds the caller's
// limit, or whose JSON payload is malformed is an error, and no more than the limit is ever read or
// allocated. Callers treat any decode error as fatal for the stream.
package wire
