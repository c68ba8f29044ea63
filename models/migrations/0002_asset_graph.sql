-- The VPP asset graph: sites (homes with batteries) and aggregation nodes, related in several
-- hierarchies at once (electrical topology, geography, programmes and groups). Relationships change
-- over time: an edge is valid over [valid_from, valid_to) (valid_to NULL = still valid). All times are
-- timestamptz. Site facts (battery, PV, postcode) are NOT versioned: a row holds the current facts.

-- The hierarchies an edge can belong to. single_parent: at any moment a node has at most one parent in
-- it (a tree, e.g. a site hangs off one feeder); otherwise a node may be in many parents at once.
CREATE TABLE asset_hierarchies (
    hierarchy     text PRIMARY KEY CHECK (hierarchy ~ '^[a-z][a-z0-9_]{0,31}$'),
    single_parent boolean NOT NULL,
    description   text NOT NULL DEFAULT ''
);

INSERT INTO asset_hierarchies (hierarchy, single_parent, description) VALUES
    ('electrical', true, 'site -> feeder -> substation -> region -> network'),
    ('geography', true, 'site -> postcode -> state or county -> country'),
    ('programme', false, 'programmes and logical groups; a node can be in many at once');

-- Every node of the graph, sites included (a site is also a row of `sites`).
CREATE TABLE asset_nodes (
    node_id    text PRIMARY KEY CHECK (node_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    kind       text NOT NULL CHECK (kind IN ('site', 'feeder', 'substation', 'zone', 'region', 'network',
                                             'postcode', 'county', 'state', 'country', 'programme', 'group')),
    name       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (node_id, kind)
);

-- The current facts of each site's battery (SiteParameters of algorithms/fleet_types.py) and address.
-- node_kind is always 'site': with the composite key it makes the node of a site a node of kind site.
-- Numeric bounds also reject NaN (which PostgreSQL orders above every number) and infinities.
CREATE TABLE sites (
    site_id                 text PRIMARY KEY,
    node_kind               text NOT NULL DEFAULT 'site' CHECK (node_kind = 'site'),
    postcode                text NOT NULL CHECK (postcode ~ '^[A-Za-z0-9][A-Za-z0-9 -]{1,9}$'),
    battery_count           integer NOT NULL DEFAULT 1 CHECK (battery_count >= 1),
    capacity_kwh            double precision NOT NULL CHECK (capacity_kwh > 0 AND capacity_kwh < 'Infinity'),
    max_charge_kw           double precision NOT NULL CHECK (max_charge_kw > 0 AND max_charge_kw < 'Infinity'),
    max_discharge_kw        double precision NOT NULL
                            CHECK (max_discharge_kw > 0 AND max_discharge_kw < 'Infinity'),
    charge_efficiency       double precision NOT NULL CHECK (charge_efficiency > 0 AND charge_efficiency <= 1),
    discharge_efficiency    double precision NOT NULL
                            CHECK (discharge_efficiency > 0 AND discharge_efficiency <= 1),
    backup_reserve_fraction double precision NOT NULL
                            CHECK (backup_reserve_fraction >= 0 AND backup_reserve_fraction <= 1),
    pv_capacity_kw          double precision NOT NULL DEFAULT 0
                            CHECK (pv_capacity_kw >= 0 AND pv_capacity_kw < 'Infinity'),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (site_id, node_kind) REFERENCES asset_nodes (node_id, kind) ON DELETE CASCADE
);

-- Time-varying relationships: child_id is under parent_id in `hierarchy` over [valid_from, valid_to).
-- An edge is identified by (parent_id, child_id, hierarchy, valid_from); closing it sets valid_to. The
-- primary key (with valid_to included) is also the index of the downward walk (subtree resolution).
-- References to asset_nodes and asset_hierarchies are checked by the statement trigger below, not by
-- FOREIGN KEY clauses: row-by-row foreign key checks made a 300,000-edge import 2.4 times slower.
-- child_kind repeats the child's kind (a node never changes kind; the trigger checks it): the downward
-- walk stops at sites and returns them without joining `sites`.
CREATE TABLE asset_edges (
    parent_id  text NOT NULL,
    child_id   text NOT NULL,
    hierarchy  text NOT NULL,
    child_kind text NOT NULL,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    CHECK (parent_id <> child_id),
    CHECK (valid_from > '-infinity' AND (valid_to IS NULL OR (valid_to > valid_from AND valid_to < 'infinity'))),
    PRIMARY KEY (parent_id, child_id, hierarchy, valid_from) INCLUDE (valid_to)
);

-- Walking up (overlap checks, ancestors).
CREATE INDEX asset_edges_up ON asset_edges (child_id, hierarchy) INCLUDE (parent_id, valid_from, valid_to);

-- Integrity of new or changed edges, checked once per statement over all its rows (bulk imports stay
-- fast), without extensions (no btree_gist exclusion constraint):
--   * the hierarchy, the parent and the child exist, and child_kind is the child's kind;
--   * no two edges of the same hierarchy, parent and child with overlapping validity;
--   * in a single_parent hierarchy, no two edges of the same child with overlapping validity;
--   * a site is a leaf: it is never a parent.
-- The advisory lock serialises writers of asset_edges from the check to the end of their transaction;
-- the check's queries then run on a fresh snapshot (READ COMMITTED), so they see edges committed by a
-- writer they waited for. Under REPEATABLE READ or SERIALIZABLE they could not: write edges in READ
-- COMMITTED. Cycles are not checked here (the import rejects edges that close one).
CREATE FUNCTION asset_edges_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    clash record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('openvpp.asset_edges'));
    SELECT n.hierarchy, n.parent_id, n.child_id INTO clash
      FROM new_edges n
     WHERE NOT EXISTS (SELECT 1 FROM asset_hierarchies h WHERE h.hierarchy = n.hierarchy)
        OR NOT EXISTS (SELECT 1 FROM asset_nodes p WHERE p.node_id = n.parent_id)
        OR NOT EXISTS (SELECT 1 FROM asset_nodes c WHERE c.node_id = n.child_id AND c.kind = n.child_kind)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = format('asset edge %s -> %s (%s) names an unknown node or hierarchy, or a wrong child_kind',
                             clash.parent_id, clash.child_id, clash.hierarchy);
    END IF;
    SELECT n.hierarchy, n.parent_id, n.child_id, n.valid_from, n.valid_to,
           e.parent_id AS other_parent_id, e.valid_from AS other_valid_from, e.valid_to AS other_valid_to
      INTO clash
      FROM new_edges n
      JOIN asset_hierarchies h ON h.hierarchy = n.hierarchy
      JOIN asset_edges e ON e.child_id = n.child_id AND e.hierarchy = n.hierarchy
                        AND (e.parent_id = n.parent_id OR h.single_parent)
                        AND NOT (e.parent_id = n.parent_id AND e.valid_from = n.valid_from)
                        AND e.valid_from < coalesce(n.valid_to, 'infinity')
                        AND n.valid_from < coalesce(e.valid_to, 'infinity')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'exclusion_violation',
            MESSAGE = format('asset edge %s -> %s (%s) valid [%s, %s) overlaps the edge %s -> %s valid [%s, %s)',
                             clash.parent_id, clash.child_id, clash.hierarchy, clash.valid_from,
                             coalesce(clash.valid_to::text, 'open'), clash.other_parent_id, clash.child_id,
                             clash.other_valid_from, coalesce(clash.other_valid_to::text, 'open'));
    END IF;
    SELECT n.parent_id INTO clash
      FROM new_edges n JOIN asset_nodes p ON p.node_id = n.parent_id
     WHERE p.kind = 'site'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'check_violation',
            MESSAGE = format('asset edge parent %s is a site: sites are leaves of every hierarchy', clash.parent_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER asset_edges_check_insert AFTER INSERT ON asset_edges
    REFERENCING NEW TABLE AS new_edges FOR EACH STATEMENT EXECUTE FUNCTION asset_edges_check();
CREATE TRIGGER asset_edges_check_update AFTER UPDATE ON asset_edges
    REFERENCING NEW TABLE AS new_edges FOR EACH STATEMENT EXECUTE FUNCTION asset_edges_check();

-- What the foreign keys would do on delete: deleting nodes deletes their edges; a hierarchy in use
-- cannot be deleted.
CREATE FUNCTION asset_nodes_delete_edges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM asset_edges e USING old_nodes o WHERE e.parent_id = o.node_id;
    DELETE FROM asset_edges e USING old_nodes o WHERE e.child_id = o.node_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER asset_nodes_delete_edges AFTER DELETE ON asset_nodes
    REFERENCING OLD TABLE AS old_nodes FOR EACH STATEMENT EXECUTE FUNCTION asset_nodes_delete_edges();

CREATE FUNCTION asset_hierarchies_keep_used() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM asset_edges e JOIN old_hierarchies o ON o.hierarchy = e.hierarchy) THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
            MESSAGE = 'a hierarchy that edges use cannot be deleted';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER asset_hierarchies_keep_used AFTER DELETE ON asset_hierarchies
    REFERENCING OLD TABLE AS old_hierarchies FOR EACH STATEMENT EXECUTE FUNCTION asset_hierarchies_keep_used();
