-- Merge fields of a listing (a Property record): how many active listings its agent has.
-- The one parameter is the batch's record ids as a JSON array (nvarchar); record_id keys
-- each row. A stored procedure taking the same parameter serves too:
--   EXEC dbo.usp_AgentActiveListings ?
SELECT p.PropertyID AS record_id,
       COUNT(o.PropertyID) AS AgentActiveListings
FROM OPENJSON(?) WITH (id bigint '$') AS ids
JOIN dbo.Property AS p ON p.PropertyID = ids.id
LEFT JOIN dbo.Property AS o ON o.AgentID = p.AgentID AND o.Status = N'Active'
GROUP BY p.PropertyID;
