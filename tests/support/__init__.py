"""What the tests share: `servers` (real `ferroute serve`, mock upstream and Redis processes, request helpers),
`mock_upstream` (the fault-injecting mock upstream process), `grammar` (an independent reading of the spec's stream
grammar, with `openresponses-types` validation), `inprocess` (the app called in-process with a scripted upstream),
`fixtures` (the recorded provider streams) and `summaries` (reference readings of translated responses)."""
