\set pid random(0, :hot - 1)
\set q random(:hot, :people - 1)
\set r random(1, 999999999)
BEGIN;
SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(ARRAY[hashtextextended('e:' || ('u' || (:pid)::text || '@seed.test'), 0), hashtextextended('p:' || ('9' || lpad((:pid)::text, 10, '0')), 0)]) AS k ORDER BY k) s;
SELECT coalesce((array_agg(r ORDER BY r))[1], 0) AS w, coalesce((array_agg(r ORDER BY r))[2], 0) AS l, count(*) AS n FROM (SELECT DISTINCT coalesce(linked_id, id) AS r FROM contact WHERE deleted_at IS NULL AND (email = ('u' || (:pid)::text || '@seed.test') OR phone_number = ('9' || lpad((:pid)::text, 10, '0')))) x \gset
SELECT id, email, phone_number, linked_id, created_at FROM contact WHERE deleted_at IS NULL AND (id = ANY(ARRAY[:w, :l]::int[]) OR linked_id = ANY(ARRAY[:w, :l]::int[]));
END;
