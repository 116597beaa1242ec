-- Issue 26: inputs that protect nobody are refused where they enter; rows written before
-- keep working, in the fail-closed direction or as an explicit, visible opt-out.

-- A plain federation with no update clip and a mean-based strategy accepted unbounded updates;
-- it now has to say so (`allow_unbounded_updates`, shown by the API and the dashboard).
UPDATE federations
SET config = json_set(config, '$.allow_unbounded_updates', json('true'))
WHERE json_extract(config, '$.secure_aggregation') = 0
  AND json_extract(config, '$.update_clip') IS NULL
  AND COALESCE(json_extract(config, '$.strategy.name'), 'fed_avg')
      NOT IN ('coordinate_median', 'trimmed_mean');

-- Budgets above the largest accepted epsilon (1e6) are lowered to it: a lower budget can only
-- refuse more work, never spend more.
UPDATE federations
SET config = json_set(config, '$.client_budget.epsilon', 1e6)
WHERE json_extract(config, '$.client_budget.epsilon') > 1e6;
UPDATE federations
SET config = json_set(config, '$.federation_budget.epsilon', 1e6)
WHERE json_extract(config, '$.federation_budget.epsilon') > 1e6;
UPDATE clients SET budget_epsilon = 1e6 WHERE budget_epsilon > 1e6;
