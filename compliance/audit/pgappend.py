"""The append step as one PostgreSQL function: lock the head, store the leaf, cache the nodes it
completes, advance the head, in one statement and one round trip.

Why it exists: on PostgreSQL every append holds the head row's lock until the caller commits, so the
log's throughput is bounded by how long that lock is held. Done through the ORM the append is four
to five statements (lock, leaf, nodes, head, plus a savepoint inside the caller's transaction) and
the lock spans all their round trips; as one statement it spans one statement and the commit.
Measured with tests/benchmarks/bench_audit.py (see the commit that added this module).

It mirrors `merkle.CompactRange.append` from the frontier stored in the head row (see AuditHead):
while the new leaf's index at the current level is odd, the last frontier entry is its left sibling,
node = SHA-256(0x01 || left || right), one level up. `audit_verify` recomputes every leaf hash,
node and the frontier in Python, and the tests compare both paths, so the two cannot drift apart
unnoticed.

It returns NULL, having written nothing, when the head row does not exist yet or its frontier does
not describe a tree of its size (a head from before migration 0003, or an edited one): the caller
then takes the ORM path, which creates the head or rebuilds the frontier from the cached nodes.
SQLite has no such function; it always takes the ORM path (its writers are serialised by the
database file's lock anyway).
"""

from __future__ import annotations

FUNCTION = "audit_append_leaf"

CALL_SQL = f"SELECT {FUNCTION}(%s, %s, %s, %s, %s)"

_INSTALL = r"""
CREATE OR REPLACE FUNCTION audit_append_leaf(
    p_leaf_bytes bytea, p_leaf_hash bytea, p_event_type varchar, p_request_id uuid, p_created_at timestamptz
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_size bigint;
    v_frontier bytea;
    v_entries integer := 0;
    v_node bytea := p_leaf_hash;
    v_level integer := 0;
    v_index bigint;
    v_end integer;
BEGIN
    -- 1. Lock the head: sequence numbers are allocated one at a time, dense, with no gaps; the lock
    --    is held until the caller's transaction ends.
    SELECT size, frontier INTO v_size, v_frontier FROM audit_audithead WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- 2. The frontier must hold one (level byte, 32-byte hash) entry per set bit of the size,
    --    largest first (CompactRange.resume's check); checked before anything is written.
    FOR v_bit IN REVERSE 62..0 LOOP
        IF (v_size >> v_bit) & 1 = 1 THEN
            IF length(v_frontier) < 33 * (v_entries + 1) OR get_byte(v_frontier, 33 * v_entries) <> v_bit THEN
                RETURN NULL;
            END IF;
            v_entries := v_entries + 1;
        END IF;
    END LOOP;
    IF length(v_frontier) <> 33 * v_entries THEN
        RETURN NULL;
    END IF;
    -- 3. The leaf.
    INSERT INTO audit_auditleaf (seq, leaf_bytes, leaf_hash, event_type, request_id, created_at)
    VALUES (v_size, p_leaf_bytes, p_leaf_hash, p_event_type, p_request_id, p_created_at);
    -- 4. Every complete subtree this leaf finishes: pop the frontier's last entry (the left
    --    sibling, at this level) while the index at this level is odd.
    v_index := v_size;
    WHILE v_index & 1 = 1 LOOP
        v_end := length(v_frontier);
        v_node := sha256(decode('01', 'hex') || substr(v_frontier, v_end - 31, 32) || v_node);
        v_frontier := substr(v_frontier, 1, v_end - 33);
        v_level := v_level + 1;
        v_index := v_index >> 1;
        INSERT INTO audit_auditnode ("level", "index", "hash") VALUES (v_level, v_index, v_node);
    END LOOP;
    -- 5. The head: one more leaf, the new subtree pushed on the frontier.
    UPDATE audit_audithead
    SET size = v_size + 1, frontier = v_frontier || set_byte(decode('00', 'hex'), 0, v_level) || v_node
    WHERE id = 1;
    RETURN v_size;
END
$$;
"""


def install_sql(vendor: str) -> list[str]:
    return [_INSTALL] if vendor == "postgresql" else []


def drop_sql(vendor: str) -> list[str]:
    if vendor != "postgresql":
        return []
    return [f"DROP FUNCTION IF EXISTS {FUNCTION}(bytea, bytea, varchar, uuid, timestamptz);"]
