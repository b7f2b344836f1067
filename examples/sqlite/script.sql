.headers on
.mode column
SELECT name, ipa_bits, hex(measured) AS rim FROM realms ORDER BY id;
.mode list
SELECT r.name, g.state, count(*), printf('%#x', min(g.ipa)) FROM granules g JOIN realms r ON r.id = g.realm
  GROUP BY r.name, g.state ORDER BY r.name, g.state;
SELECT sum(ipa) % 1000003, avg(ipa_bits), group_concat(name, '+') FROM granules, realms WHERE realms.id = granules.realm AND granules.ipa < 0x80010000;
.mode csv
SELECT state, count(*) AS n FROM granules GROUP BY state ORDER BY n DESC, state;
.mode json
SELECT id, name FROM realms WHERE ipa_bits > 33;
.mode box
SELECT name, length(name) AS len, upper(name) AS up FROM realms WHERE measured IS NOT NULL ORDER BY name;
.headers off
.mode list
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) SELECT sum(x * x), total(x) / count(*) FROM c;
SELECT sqlite_version();
PRAGMA integrity_check;
