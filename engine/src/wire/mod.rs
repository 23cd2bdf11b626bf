//! Kafka wire framing: length-prefixed frames, request headers, and the hand-framed zero-copy
//! Fetch response. (Filled in by the broker work.)
