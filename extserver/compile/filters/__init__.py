"""One module per HTTP filter the compiler inserts; `order.py` fixes their order before the router."""
