\set pid random(:hot, :people - 1)
\set q random(:hot, :people - 1)
\set r random(1, 999999999)
BEGIN;
SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(ARRAY[hashtextextended('e:' || ('n' || (:nonce)::text || '.' || (:client_id)::text || '.' || (:r)::text || '@new.test'), 0), hashtextextended('p:' || ('5' || (:nonce)::text || lpad((:client_id)::text, 3, '0') || lpad((:r)::text, 9, '0')), 0)]) AS k ORDER BY k) s;
SELECT count(*) FROM contact WHERE deleted_at IS NULL AND (email = ('n' || (:nonce)::text || '.' || (:client_id)::text || '.' || (:r)::text || '@new.test') OR phone_number = ('5' || (:nonce)::text || lpad((:client_id)::text, 3, '0') || lpad((:r)::text, 9, '0')));
INSERT INTO contact (email, phone_number, link_precedence, created_at, updated_at) VALUES (('n' || (:nonce)::text || '.' || (:client_id)::text || '.' || (:r)::text || '@new.test'), ('5' || (:nonce)::text || lpad((:client_id)::text, 3, '0') || lpad((:r)::text, 9, '0')), 'primary', now(), now());
END;
