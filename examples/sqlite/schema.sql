CREATE TABLE realms(id INTEGER PRIMARY KEY, name TEXT NOT NULL, ipa_bits INTEGER, measured BLOB);
CREATE TABLE granules(realm INTEGER REFERENCES realms(id), ipa INTEGER, state TEXT);
CREATE INDEX granules_realm ON granules(realm);
INSERT INTO realms(name, ipa_bits, measured) VALUES
  ('alpha', 33, x'00112233'), ('beta', 40, NULL), ('gamma', 48, x'deadbeef'), ('delta', 33, x'');
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 499)
INSERT INTO granules SELECT 1 + i % 4, 0x80000000 + i * 4096,
  CASE i % 3 WHEN 0 THEN 'RAM' WHEN 1 THEN 'EMPTY' ELSE 'DESTROYED' END FROM n;
