source /tmp/upg55/ids2.env; i=0
while [ ! -e /tmp/upg55/run/stop2 ]; do i=$((i+1))
 R=$(curl -s -m 60 -o /tmp/upg55/run/l2.body -w '%{http_code} %{time_total}' -X POST http://127.0.0.1:8111/v1/resources -H "Authorization: Bearer $AK" -H 'Content-Type: application/json' -H "Idempotency-Key: l2-$i" -d "{\"name\":\"l2-$i\"}")
 echo "$(date +%T.%N|cut -c1-12) POST $R $(head -c 250 /tmp/upg55/run/l2.body)" >> /tmp/upg55/run/l2.log
 R=$(curl -s -m 60 -o /tmp/upg55/run/l2.body -w '%{http_code} %{time_total}' http://127.0.0.1:8111/v1/resources?limit=5 -H "Authorization: Bearer $BK")
 echo "$(date +%T.%N|cut -c1-12) GET $R $(head -c 250 /tmp/upg55/run/l2.body)" >> /tmp/upg55/run/l2.log
 sleep 0.2; done
