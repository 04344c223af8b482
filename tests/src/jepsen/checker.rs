//! Pure checkers over a recorded history (see `history`).
