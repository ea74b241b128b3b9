-- Merge fields of a listing (a Property record): how many active listings its agent has.
-- The one parameter is the batch's record ids as a JSON array; record_id keys each row.
SELECT p."PropertyID" AS record_id,
       COUNT(o."PropertyID") AS "AgentActiveListings"
FROM json_each(?) AS ids
JOIN "Property" AS p ON p."PropertyID" = ids.value
LEFT JOIN "Property" AS o ON o."AgentID" = p."AgentID" AND o."Status" = 'Active'
GROUP BY p."PropertyID";
