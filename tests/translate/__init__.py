"""Each upstream dialect's translator on the recorded fixtures, against independent readings of them."""
