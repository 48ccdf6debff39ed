//! Rules: each looks at the mirror and proposes actions.
