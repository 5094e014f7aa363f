"""The ext_proc protocol side of the picker: stream state machine, request attributes, mutation builders."""
