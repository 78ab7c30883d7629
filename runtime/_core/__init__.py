"""The engine core: node lifecycle, messaging, membership, placement, the pool consumer, cells."""
