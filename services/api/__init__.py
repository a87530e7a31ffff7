"""The facilitator API: staff act on cases over HTTP with their force's login; read models built by following
the topics; every view of personal data logged (rule 8); participants' single-purpose withdraw links."""
